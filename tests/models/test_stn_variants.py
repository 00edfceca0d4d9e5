"""IC-STN, parallel transformers, feature-map transformers, every model × family from config."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from stnlab.geometry import AffineTransform, TPSTransform, matrix_grid, sample
from stnlab.models import CNN, ConvLocNet, ICSpatialTransformer, SpatialTransformer, STNClassifier
from stnlab.tasks import train

FAMILIES = ["translation", "attention", "similarity", "affine", "projective", "tps"]


def _perturb(stn: SpatialTransformer, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        stn.regressor.weight.copy_(0.01 * torch.randn(stn.regressor.weight.shape, generator=gen))


def test_ic_stn_with_one_step_equals_a_plain_stn() -> None:
    torch.manual_seed(0)
    plain = SpatialTransformer(ConvLocNet(1, 28), AffineTransform())
    _perturb(plain)
    ic = ICSpatialTransformer(ConvLocNet(1, 28), AffineTransform(), steps=1)
    ic.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 28, 28)
    assert (ic(x) - plain(x)).abs().max() < 1e-5


def test_ic_stn_composes_warps_and_samples_the_original_once() -> None:
    ic = ICSpatialTransformer(ConvLocNet(1, 20), AffineTransform(), steps=2)
    step = torch.tensor([0.9, 0.1, 0.05, -0.1, 0.9, 0.0])
    with torch.no_grad():
        ic.regressor.bias.copy_(step)  # zero weights: every step predicts the same update
    x = torch.rand(3, 1, 20, 20)
    one = AffineTransform().to_matrix(step[None]).expand(3, 3, 3)
    composed = sample(x, matrix_grid(one @ one, (20, 20)))
    assert (ic(x) - composed).abs().max() < 1e-5
    twice = sample(sample(x, matrix_grid(one, (20, 20))), matrix_grid(one, (20, 20)))
    assert (ic(x) - twice).abs().max() > 1e-3  # re-sampling a re-sampled image would blur


def test_ic_stn_rejects_families_without_a_matrix() -> None:
    with pytest.raises(ValueError, match="tps family has no matrix form"):
        ICSpatialTransformer(ConvLocNet(1, 28), TPSTransform())


def test_parallel_transformers_concatenate_on_channels() -> None:
    stn = SpatialTransformer(ConvLocNet(1, 28), AffineTransform(), num_transformers=3)
    x = torch.rand(2, 1, 28, 28)
    out = stn(x)
    assert out.shape == (2, 3, 28, 28)
    assert all((out[:, i : i + 1] - x).abs().max() < 1e-5 for i in range(3))  # identity init
    _perturb(stn, 1)
    out = stn(x)
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)  # heads differ once trained
    net = STNClassifier(CNN(3, 28, 10), stn, mean=[0.1], std=[0.3])
    assert net(x).shape == (2, 10) and net.mean.shape == (1, 3, 1, 1)


def test_transformer_on_feature_maps_and_post_pool() -> None:
    loc = ConvLocNet(32, 14)
    net = STNClassifier(
        CNN(1, 28, 10), SpatialTransformer(loc, AffineTransform()), transformer_at="features"
    )
    x = torch.rand(2, 1, 28, 28)
    backbone = net.backbone
    expected = backbone.head(net.transformer(backbone.stem(x)))  # mean 0, std 1
    assert torch.allclose(net(x), expected)
    pooled = STNClassifier(
        CNN(1, 21, 10), SpatialTransformer(ConvLocNet(1, 42), AffineTransform()), post_pool=2
    )
    assert pooled.warp(torch.rand(2, 1, 42, 42)).shape == (2, 1, 21, 21)
    with pytest.raises(ValueError, match="transformer_at must be"):
        STNClassifier(CNN(1, 28, 10), transformer_at="middle")


@pytest.mark.parametrize(
    ("model", "family"),
    [
        *itertools.product(["stn_fcn", "stn_cnn"], FAMILIES),
        *[("ic_stn_cnn", f) for f in FAMILIES if f != "tps"],
        ("fcn", None),
        ("cnn", None),
        ("stn_cnn_features", "affine"),
    ],
)
def test_every_model_and_family_runs_on_rts(
    make_cfg: Callable[..., DictConfig], model: str, family: str | None
) -> None:
    overrides = [f"model={model}", "data=rts", "debug=fdr"]
    if family:
        overrides.append(f"model/transform={family}")
    metrics = train(make_cfg(*overrides))
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_parallel_transformers_from_config(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("model=stn_cnn", "model.net.transformer.num_transformers=2", "debug=fdr")
    assert cfg.model.net.backbone.in_channels == 2
    train(cfg)


def test_rts_average_pool_from_config(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("model=stn_cnn", "data=rts", "model.net.post_pool=2", "debug=fdr")
    assert cfg.model.net.backbone.input_size == 21
    train(cfg)
