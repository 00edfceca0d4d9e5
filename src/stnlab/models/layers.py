"""Layers the localisation nets and the classifier backbones share: conv stacks, MLPs,
width scaling and the flattened size of a feature extractor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def scale_widths(widths: Sequence[int], mult: float, what: str) -> list[int]:
    """``widths`` × ``mult``, rounded, at least 1 each (one knob sizes a whole net)."""
    if mult <= 0:
        raise ValueError(f"{what}.width_mult must be > 0, got {mult}")
    return [max(1, round(w * mult)) for w in widths]


def mlp(in_features: int, hidden: Sequence[int]) -> tuple[nn.Sequential, int]:
    """(Linear → ReLU) per ``hidden`` width; returns the stack and its output width."""
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


def flat_size(body: nn.Module, in_channels: int, input_size: int, what: str) -> int:
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
