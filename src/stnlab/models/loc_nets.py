"""Localisation nets: image ``(B, C, H, W)`` → features ``(B, out_features)``.

The regression layer that turns the features into θ belongs to
:class:`~stnlab.models.SpatialTransformer`, which initialises it to the identity of its
transform family; a localisation net only extracts features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def scale_widths(widths: Sequence[int], mult: float, what: str) -> list[int]:
    """``widths`` × ``mult``, rounded, at least 1 each (one knob sizes a whole net)."""
    if mult <= 0:
        raise ValueError(f"{what}.width_mult must be > 0, got {mult}")
    return [max(1, round(w * mult)) for w in widths]


def _mlp(in_features: int, hidden: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers), in_features


def conv_stack(
    in_channels: int,
    channels: Sequence[int],
    kernels: Sequence[int],
    pool: int,
    what: str,
    strides: Sequence[int] | None = None,
) -> list[nn.Module]:
    """(conv k×k "same" → ReLU → max-pool) per layer; ReLU and max-pool commute. A conv
    with stride ``s`` (default 1) keeps the "same" padding and divides the side by ``s``."""
    strides = [1] * len(channels) if strides is None else list(strides)
    if not len(channels) == len(kernels) == len(strides):
        raise ValueError(
            f"{what} needs one kernel per conv layer (and one stride): channels={list(channels)}, "
            f"kernels={list(kernels)}, strides={strides}"
        )
    layers: list[nn.Module] = []
    for width, kernel, stride in zip(channels, kernels, strides, strict=True):
        layers += [
            nn.Conv2d(in_channels, width, kernel, stride=stride, padding=kernel // 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(pool),
        ]
        in_channels = width
    return layers


def _flat_size(body: nn.Module, in_channels: int, input_size: int, what: str) -> int:
    """Number of features ``body`` yields for one ``(C, S, S)`` input, with a clear error."""
    with torch.no_grad():
        try:
            out = body(torch.zeros(1, in_channels, input_size, input_size))
        except RuntimeError as err:
            raise ValueError(
                f"{what} does not fit a {in_channels}×{input_size}×{input_size} input: {err}. "
                "Use fewer pooling stages or smaller kernels, or a larger canvas."
            ) from err
    if out.numel() == 0:
        raise ValueError(
            f"{what} reduces a {input_size}×{input_size} input to nothing; "
            "use fewer pooling stages or a larger canvas."
        )
    return out[0].numel()


class ConvLocNet(nn.Module):
    """Conv localisation net: [max-pool] → (conv → ReLU → max-pool)×n → FC → ReLU ….

    Args:
        in_channels: channels of the input image.
        input_size: side of the square input.
        channels: output channels of each conv layer.
        kernels: kernel size of each conv layer (odd; "same" padding).
        hidden: widths of the fully connected layers after the convs.
        input_pool: max-pool factor applied to the input first (1 = none); cheap on large
            canvases, as in the paper's localisation nets.
        pool: max-pool factor after each conv.
        strides: stride of each conv layer (default 1 each; the co-localisation
            experiment's paper net has one 9×9 conv of stride 4).
        width_mult: multiplies every conv channel count and hidden width (a single size
            knob for sweeps and searches).
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        channels: Sequence[int] = (20, 20),
        kernels: Sequence[int] = (5, 5),
        hidden: Sequence[int] = (50,),
        input_pool: int = 1,
        pool: int = 2,
        width_mult: float = 1.0,
        strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        channels = scale_widths(channels, width_mult, "ConvLocNet")
        hidden = scale_widths(hidden, width_mult, "ConvLocNet")
        layers: list[nn.Module] = [nn.MaxPool2d(input_pool)] if input_pool > 1 else []
        layers += conv_stack(in_channels, channels, kernels, pool, "ConvLocNet", strides)
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        flat = _flat_size(self.features, in_channels, input_size, "ConvLocNet")
        self.head, self.out_features = _mlp(flat, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, out_features)``."""
        return self.head(self.features(x))


class FCLocNet(nn.Module):
    """Fully connected localisation net: flatten → (FC → ReLU)×n, with optional input pooling.

    ``width_mult`` multiplies every hidden width (a single size knob for searches).
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        hidden: Sequence[int] = (32, 32, 32),
        input_pool: int = 1,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        hidden = scale_widths(hidden, width_mult, "FCLocNet")
        if not hidden:
            raise ValueError("FCLocNet needs at least one hidden layer, e.g. hidden=[32]")
        pre: list[nn.Module] = [nn.MaxPool2d(input_pool)] if input_pool > 1 else []
        self.features = nn.Sequential(*pre, nn.Flatten())
        flat = _flat_size(self.features, in_channels, input_size, "FCLocNet")
        self.head, self.out_features = _mlp(flat, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, out_features)``."""
        return self.head(self.features(x))
