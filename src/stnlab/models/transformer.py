"""Spatial transformers: localisation net → θ → grid → bilinear sample."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from stnlab.checks import check_range
from stnlab.geometry import (
    ProjectiveTransform,
    TransformFamily,
    invert_points,
    matrix_grid,
    sample,
)


class GridSampler(nn.Module):
    """Bilinear sampling of ``x`` ``(B, C, H, W)`` at ``grid`` ``(B, S, S, 2)`` → ``(B, C, S, S)``.

    A module of its own so that observers (training-health checks, analysis) can watch
    every grid a transformer uses through a forward hook, without flags in the model.
    """

    def forward(self, x: Tensor, grid: Tensor) -> Tensor:
        return sample(x, grid)


class SpatialTransformer(nn.Module):
    """Warp the input by a θ that a localisation net predicts from it.

    The final regression layer starts at the identity (zero weights, identity bias), so a
    fresh transformer passes its input through unchanged and learns away from it; with
    ``init_scale < 1`` it starts at a centred window instead, ``init_scale`` × the input's
    side (a zoomed-in identity), so a transformer whose output is smaller than its input
    samples at full resolution from the first step. With
    ``num_transformers = N > 1`` the localisation features feed N regression heads and the
    N warped copies are concatenated on channels: ``(B, N·C, S, S)``.

    Args:
        loc_net: module ``(B, C, H, W)`` → ``(B, F)`` with an ``out_features`` attribute.
        transform: the transform family θ belongs to.
        output_size: side of the square output (default: same as the input).
        num_transformers: parallel transformers sharing the localisation net.
        init_scale: side of the initial window as a fraction of the input's side
            (:meth:`TransformFamily.window <stnlab.geometry.TransformFamily.window>`).

    Attributes:
        sampler: the :class:`GridSampler` every output goes through; hook it to observe
            the sampling grids ``(B·N, S, S, 2)``.
    """

    def __init__(
        self,
        loc_net: nn.Module,
        transform: TransformFamily,
        output_size: int | None = None,
        num_transformers: int = 1,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_range(
            "model.net.transformer.num_transformers", num_transformers, integer=True, minimum=1
        )
        check_range("model.net.transformer.init_scale", init_scale, above=0.0, maximum=1.0)
        self.loc_net = loc_net
        self.transform = transform
        self.output_size = output_size
        self.num_transformers = num_transformers
        self.init_scale = init_scale
        self.regressor = nn.Linear(loc_net.out_features, transform.num_params * num_transformers)
        self.reset_to_identity()
        self.sampler = GridSampler()

    def reset_to_identity(self) -> None:
        """Zero the regression weights and set its bias to the family's identity θ (the
        centred window of ``init_scale``)."""
        nn.init.zeros_(self.regressor.weight)
        identity = self.transform.window(self.init_scale).repeat(self.num_transformers)
        self.regressor.bias.data.copy_(identity.to(self.regressor.bias))

    def predict_theta(self, x: Tensor) -> Tensor:
        """θ ``(B, N·P)`` for input ``(B, C, H, W)``."""
        return self.regressor(self.loc_net(x))

    def warp_params(self, x: Tensor, index: int = 0) -> tuple[TransformFamily, Tensor]:
        """The warp of transformer ``index`` (of ``num_transformers``) for input
        ``(B, C, H, W)``: its family and θ ``(B, P)``, mapping output to input in
        normalised coordinates."""
        if not 0 <= index < self.num_transformers:
            raise IndexError(
                f"transformer index {index} out of range: {self.num_transformers} transformer(s)"
            )
        p = self.transform.num_params
        return self.transform, self.predict_theta(x)[:, index * p : (index + 1) * p]

    def locate(self, x: Tensor, points: Tensor, index: int = 0) -> Tensor:
        """Where input points ``(B, M, 2)`` appear on the output of transformer ``index``:
        ``(B, M, 2)``.

        Both in normalised coordinates. The inverse of the sampling map: exact for families
        with a matrix form, Newton steps for the thin-plate spline
        (:func:`~stnlab.geometry.invert_points`).
        """
        family, theta = self.warp_params(x, index)
        return invert_points(family, theta, points)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → warped ``(B, N·C, S, S)`` with ``S = output_size or H``."""
        side = self.output_size or x.shape[-1]
        theta = self.predict_theta(x)
        if self.num_transformers == 1:
            return self.sampler(x, self.transform.grid(theta, (side, side)))
        b, c = x.shape[:2]
        n = self.num_transformers
        thetas = theta.view(b * n, -1)
        copies = x.unsqueeze(1).expand(b, n, *x.shape[1:]).reshape(b * n, *x.shape[1:])
        out = self.sampler(copies, self.transform.grid(thetas, (side, side)))
        return out.view(b, n * c, side, side)


class ICSpatialTransformer(SpatialTransformer):
    """Inverse-compositional STN (Lin & Lucey, CVPR 2017).

    The localisation net is applied ``steps`` times. Each step looks at the input warped
    by the running warp ``M`` and predicts an update ``Δ``; the warps are composed as
    3×3 matrices (``M ← M · Δ``) and every step, as well as the output, samples the
    *original* input once, never a re-sampled image. Needs a family with a matrix form
    (translation, attention, similarity, affine, projective).

    Takes :class:`SpatialTransformer`'s arguments (``num_transformers`` must stay 1:
    parallel IC-STNs are not supported), and:

    Args:
        steps: number of recurrent steps (1 = a plain spatial transformer).
    """

    def __init__(self, *args: Any, steps: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.num_transformers != 1:
            raise ValueError(
                f"IC-STN supports num_transformers=1 only, got {self.num_transformers}"
            )
        if steps < 1:
            raise ValueError(f"IC-STN needs steps >= 1, got {steps}")
        if self.init_scale != 1.0:  # every step's update would zoom again: s ** steps
            raise ValueError(
                f"IC-STN composes its steps' warps: model.net.transformer.init_scale="
                f"{self.init_scale} would zoom at every step; use 1.0"
            )
        try:
            self.transform.to_matrix(self.transform.identity()[None])
        except NotImplementedError:
            raise ValueError(
                f"IC-STN composes warps as matrices; the {self.transform.name} family has no "
                "matrix form (use translation, attention, similarity, affine or projective)"
            ) from None
        self.steps = steps

    def warp_matrix(self, x: Tensor) -> Tensor:
        """The composed warp ``(B, 3, 3)`` after all steps."""
        size = (x.shape[-2], x.shape[-1])
        matrix = torch.eye(3, device=x.device, dtype=x.dtype).expand(x.shape[0], 3, 3)
        view = x
        for step in range(self.steps):
            if step > 0:
                view = sample(x, matrix_grid(matrix, size))
            matrix = matrix @ self.transform.to_matrix(self.predict_theta(view))
        return matrix

    def warp_params(self, x: Tensor, index: int = 0) -> tuple[TransformFamily, Tensor]:
        """The composed warp as a homography: ``ProjectiveTransform`` and θ ``(B, 8)``."""
        if index != 0:
            raise IndexError(f"transformer index {index} out of range: IC-STN has one")
        matrix = self.warp_matrix(x)
        theta = (matrix / matrix[:, 2:, 2:]).flatten(1)[:, :8]
        return ProjectiveTransform(), theta

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, C, S, S)`` sampled once from ``x`` by the composed warp."""
        side = self.output_size or x.shape[-1]
        return self.sampler(x, matrix_grid(self.warp_matrix(x), (side, side)))
