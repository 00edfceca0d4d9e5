"""STN classifier: optional spatial transformer in front of a backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnlab.checks import check_range
from stnlab.models.transformer import SpatialTransformer


class STNClassifier(nn.Module):
    """``input (B, C, H, W) in [0, 1]`` → [transformer] → normalise → backbone → logits.

    Normalisation happens *after* the transformer: the sampler's zero padding then reads
    as the black background instead of as a grey mean value, which removes one of the
    usual causes of a transformer that zooms out until the digit vanishes.

    Args:
        backbone: classifier on the (transformed) image.
        transformer: spatial transformer, or ``None`` for a plain classifier.
        mean: per-channel mean of the data, subtracted before the backbone.
        std: per-channel standard deviation, divided out before the backbone.
        post_pool: average-pool factor applied after the transformer (the paper halves the
            42×42 RTS input this way); the backbone then sees ``S / post_pool``.
        transformer_at: ``"input"`` (the paper) or ``"features"``: after the backbone's
            first conv block (needs a backbone with ``stem``/``head``, i.e. :class:`CNN`).
        channels_last: keep conv weights and inputs in the channels-last memory format
            (NHWC); faster on CPUs for the paper-sized ST-CNN (see the README's
            Performance table). Results are the same up to float rounding.
    """

    def __init__(
        self,
        backbone: nn.Module,
        transformer: SpatialTransformer | None = None,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        post_pool: int = 1,
        transformer_at: str = "input",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if transformer_at not in ("input", "features"):
            raise ValueError(
                f"transformer_at must be 'input' or 'features', got {transformer_at!r}"
            )
        if transformer_at == "features" and not hasattr(backbone, "stem"):
            raise ValueError("transformer_at='features' needs a CNN backbone (with stem/head)")
        check_range("model.net.post_pool", post_pool, integer=True, minimum=1)
        self.transformer = transformer
        self.backbone = backbone
        self.post_pool = post_pool
        self.transformer_at = transformer_at
        copies = getattr(transformer, "num_transformers", 1)
        self.register_buffer("mean", torch.tensor(list(mean) * copies).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std) * copies).view(1, -1, 1, 1))
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def warp(self, x: Tensor) -> Tensor:
        """The image ``(B, C, H, W)`` warped by the input transformer (if any) and pooled by
        ``post_pool``: what the backbone's first layer sees before normalisation."""
        if self.transformer is not None and self.transformer_at == "input":
            x = self.transformer(x)
        if self.post_pool > 1:
            x = F.avg_pool2d(x, self.post_pool)
        return x

    @property
    def input_transformer(self) -> SpatialTransformer | None:
        """The transformer that warps the input image; ``None`` without one, or when it
        warps feature maps (``transformer_at="features"``)."""
        return self.transformer if self.transformer_at == "input" else None

    def transformed_input(self, x: Tensor) -> Tensor | None:
        """What the transformer makes of the image ``x`` ``(B, C, H, W)`` in ``[0, 1]``:
        ``(B, C, S', S')`` as the backbone sees it before normalisation (after ``post_pool``);
        with parallel transformers, the first one's. ``None`` when no transformer warps
        the input (a plain classifier, or a transformer on feature maps).

        The one place that says what "the transformed image" is: the transform-grid
        callback, prediction and analysis all use it (:meth:`transformed_inputs` for
        every parallel transformer).
        """
        outputs = self.transformed_inputs(x)
        return None if outputs is None else outputs[0]

    def transformed_inputs(self, x: Tensor) -> list[Tensor] | None:
        """Each parallel transformer's output for ``x`` ``(B, C, H, W)``: a list of
        ``num_transformers`` images ``(B, C, S', S')`` (see :meth:`transformed_input`), or
        ``None`` when no transformer warps the input."""
        if self.transformer is None or self.transformer_at != "input":
            return None
        return list(self.warp(x).split(x.shape[1], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → logits ``(B, num_classes)``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        if self.transformer_at == "features":
            x = self.warp(x)
            h = self.backbone.stem((x - self.mean[:, : x.shape[1]]) / self.std[:, : x.shape[1]])
            return self.backbone.head(self.transformer(h))
        x = self.warp(x)
        return self.backbone((x - self.mean) / self.std)
