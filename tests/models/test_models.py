"""Localisation nets, the spatial transformer and the STN classifier."""

from __future__ import annotations

import pytest
import torch

from stnlab.geometry import AffineTransform
from stnlab.models import CNN, FCN, ConvLocNet, FCLocNet, SpatialTransformer, STNClassifier


@pytest.mark.parametrize("loc_net", [ConvLocNet(1, 28), FCLocNet(1, 28)])
def test_fresh_transformer_is_the_identity(loc_net: torch.nn.Module) -> None:
    stn = SpatialTransformer(loc_net, AffineTransform())
    x = torch.rand(5, 1, 28, 28)
    theta = stn.predict_theta(x)
    assert torch.allclose(theta, AffineTransform().identity().expand(5, -1))
    assert (stn(x) - x).abs().max() < 1e-5
    assert torch.count_nonzero(stn.regressor.weight) == 0


def test_transformer_output_size_and_gradients_reach_the_loc_net() -> None:
    stn = SpatialTransformer(ConvLocNet(1, 42, input_pool=2), AffineTransform(), output_size=21)
    x = torch.rand(2, 1, 42, 42)
    out = stn(x)
    assert out.shape == (2, 1, 21, 21)
    out.square().sum().backward()
    assert stn.regressor.weight.grad is not None
    assert stn.regressor.weight.grad.abs().sum() > 0


def test_loc_net_too_deep_for_the_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"does not fit|reduces"):
        ConvLocNet(1, 8, channels=[8, 8, 8, 8], kernels=[3, 3, 3, 3])
    with pytest.raises(ValueError, match="one kernel per conv layer"):
        ConvLocNet(1, 28, channels=[8, 8], kernels=[3])


@pytest.mark.parametrize("size", [28, 42, 60])
def test_classifier_shapes(size: int) -> None:
    net = STNClassifier(
        CNN(1, size, 10),
        SpatialTransformer(ConvLocNet(1, size), AffineTransform()),
        mean=[0.1],
        std=[0.3],
    )
    logits = net(torch.rand(4, 1, size, size))
    assert logits.shape == (4, 10)
    assert FCN(1, size, 10)(torch.rand(3, 1, size, size)).shape == (3, 10)


def test_normalisation_happens_after_the_transformer() -> None:
    # With an identity backbone the output is (transformed - mean) / std, so the zero
    # padding of the sampler maps to -mean/std (black background), not to 0.
    class Flat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    stn = SpatialTransformer(FCLocNet(1, 4, hidden=[4]), AffineTransform())
    stn.regressor.bias.data = torch.tensor([2.0, 0, 0, 0, 2.0, 0])  # zoom out 2×
    net = STNClassifier(Flat(), stn, mean=[0.5], std=[0.25])
    out = net(torch.ones(1, 1, 4, 4)).view(4, 4)
    assert out[0, 0].item() == pytest.approx(-2.0)  # padding: (0 - 0.5) / 0.25
    assert out[1:3, 1:3].min().item() > -2.0
