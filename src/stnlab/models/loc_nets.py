"""Localisation nets: image ``(B, C, H, W)`` → features ``(B, out_features)``.

The regression layer that turns the features into θ belongs to
:class:`~stnlab.models.SpatialTransformer`, which initialises it to the identity of its
transform family; a localisation net only extracts features.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from stnlab.models.layers import conv_stack, flat_size, mlp, scale_widths


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
        flat = flat_size(self.features, in_channels, input_size, "ConvLocNet")
        self.head, self.out_features = mlp(flat, hidden)

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
        flat = flat_size(self.features, in_channels, input_size, "FCLocNet")
        self.head, self.out_features = mlp(flat, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, out_features)``."""
        return self.head(self.features(x))
