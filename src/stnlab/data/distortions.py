"""Batched, seeded distortions: clean digits ``(B, C, h, w)`` → canvases ``(B, C, S, S)``.

A distortion is split in two so that fixed and fresh sets share one code path:
:meth:`Distortion.sample` draws per-sample parameters (a dict of tensors with leading
dimension ``n``) from a ``torch.Generator``; :meth:`Distortion.render` warps a batch with
given parameters. Fixed validation/test sets draw their parameters once for every index;
training draws fresh ones every batch, on the batch's device.

:meth:`Distortion.pose_record` turns the same parameters into where each digit's box went
(:class:`~stnlab.geometry.PoseRecord`), which pose-recovery metrics compare with what the model's
transformer made of it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stnlab.geometry import (
    AffineTransform,
    PoseRecord,
    ProjectiveTransform,
    box_corners,
    displacement_grid,
    displacement_preimage,
    homography_from_points,
    pixel_matrix,
    placement_theta,
    sample,
    smooth_displacement,
    warp,
)

Params = dict[str, Tensor]


def pixel_homography(normalised: Tensor, digit_size: int, canvas_size: int) -> Tensor:
    """Digit → canvas homographies ``(N, 3, 3)`` in normalised coordinates, in pixels."""
    to_px = pixel_matrix(canvas_size, dtype=normalised.dtype).to(normalised.device)
    digit = pixel_matrix(digit_size, dtype=normalised.dtype).to(normalised.device)
    return to_px @ normalised @ torch.linalg.inv(digit)


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator, device: torch.device
) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _scale_range(scale: tuple[float, float] | list[float]) -> tuple[float, float]:
    """``scale`` as ``(low, high)`` with ``0 < low <= high < inf``, or a ``ValueError``."""
    try:
        values = [float(v) for v in scale]
    except (TypeError, ValueError):  # a scalar, or not numbers
        values = []
    if len(values) != 2 or not 0 < values[0] <= values[1] < math.inf:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
    return values[0], values[1]


class Distortion:
    """Base class: a family of random warps onto a square canvas of ``canvas_size``."""

    canvas_size: int

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> Params:
        """Parameters for ``n`` samples: a dict of tensors of leading dimension ``n``."""
        raise NotImplementedError

    def render(self, digits: Tensor, params: Params, pool: Tensor | None = None) -> Tensor:
        """Warp ``digits`` ``(B, C, h, w)`` in ``[0, 1]`` → ``(B, C, S, S)``.

        ``pool`` ``(n, C, h, w)`` is the set that :meth:`sample` drew source indices from
        (clutter patches); it defaults to ``digits`` itself, as for a training batch.
        """
        raise NotImplementedError

    def pose_record(self, params: Params, n: int) -> PoseRecord:
        """Where the ``n`` digits rendered with ``params`` lie on the canvas.

        See :class:`PoseRecord`; ``n`` is the leading dimension of ``params`` (which may be
        empty, as for :class:`NoDistortion`).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no pose record")

    def __call__(self, digits: Tensor, generator: torch.Generator) -> Tensor:
        """Render ``digits`` with fresh parameters drawn from ``generator``."""
        return self.render(digits, self.sample(digits.shape[0], generator, digits.device))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class NoDistortion(Distortion):
    """Plain digits; the canvas is the digit itself."""

    def __init__(self, canvas_size: int = 28) -> None:
        self.canvas_size = canvas_size

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> Params:
        return {}

    def pose_record(self, params: Params, n: int) -> PoseRecord:
        """Every digit fills the canvas, upright."""
        return PoseRecord.from_homography(torch.eye(3).expand(n, 3, 3), self.canvas_size)

    def render(self, digits: Tensor, params: Params, pool: Tensor | None = None) -> Tensor:
        if digits.shape[-1] != self.canvas_size:
            raise ValueError(
                f"NoDistortion keeps the digit size ({digits.shape[-1]}), "
                f"but canvas_size={self.canvas_size}"
            )
        return digits


class RandomSimilarity(Distortion):
    """Rotate, scale and shift each digit by uniformly drawn amounts onto a canvas.

    Args:
        canvas_size: side of the output canvas in pixels.
        max_angle: rotation drawn uniformly in ``[-max_angle, max_angle]`` degrees.
        scale: ``(low, high)`` of the uniformly drawn scale factor.
        max_shift: shift of the digit's centre, uniform in ``[-max_shift, max_shift]``
            pixels on each axis; ``None`` = a random position with the digit's (scaled)
            box inside the canvas, i.e. ``±(canvas_size - h·scale) / 2``.
        digit_size: side of the source images (28 for MNIST), used by ``max_shift=None``.
    """

    def __init__(
        self,
        canvas_size: int = 28,
        max_angle: float = 90.0,
        scale: tuple[float, float] | list[float] = (1.0, 1.0),
        max_shift: float | None = 0.0,
        digit_size: int = 28,
    ) -> None:
        low, high = _scale_range(scale)
        # written so that NaN fails too (nan < 0 is False)
        if not 0 <= max_angle < math.inf or (
            max_shift is not None and not 0 <= max_shift < math.inf
        ):
            raise ValueError(
                f"max_angle and max_shift must be finite and >= 0, got {max_angle} and {max_shift}"
            )
        if max_shift is None and canvas_size < digit_size * high - 1e-6:
            raise ValueError(
                f"canvas_size={canvas_size} is smaller than the largest digit "
                f"({digit_size}×{high:g} px); enlarge the canvas or lower the scale"
            )
        self.canvas_size = canvas_size
        self.max_angle = float(max_angle)
        self.scale = (low, high)
        self.max_shift = None if max_shift is None else float(max_shift)
        self.digit_size = digit_size
        self._affine = AffineTransform()

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> Params:
        angle = _uniform(n, -self.max_angle, self.max_angle, generator, device)
        scale = _uniform(n, *self.scale, generator, device)
        unit = _uniform(2 * n, -1.0, 1.0, generator, device).view(n, 2)
        if self.max_shift is None:
            room = (self.canvas_size - self.digit_size * scale).clamp(min=0) / 2
            shift = unit * room.unsqueeze(1)
        else:
            shift = unit * self.max_shift
        return {"angle": angle, "scale": scale, "shift": shift}

    def render(self, digits: Tensor, params: Params, pool: Tensor | None = None) -> Tensor:
        theta = placement_theta(
            params["angle"], params["scale"], params["shift"], digits.shape[-1], self.canvas_size
        )
        return warp(digits, self._affine, theta, (self.canvas_size, self.canvas_size))

    def pose_record(self, params: Params, n: int) -> PoseRecord:
        """The inverse of the sampling matrix: digit → canvas, converted to pixels."""
        theta = placement_theta(
            params["angle"], params["scale"], params["shift"], self.digit_size, self.canvas_size
        )
        normalised = torch.linalg.inv(self._affine.to_matrix(theta.double()))
        homography = pixel_homography(normalised, self.digit_size, self.canvas_size)
        return PoseRecord.from_homography(homography.float(), self.digit_size)


class RandomProjective(Distortion):
    """The paper's P: scale the digit about its centre, then move each corner by N(0, σ).

    Draws whose corners no longer form a convex quadrilateral in the original order (the
    warp folds the digit) or whose area falls under ``min_area`` of the scaled square (the
    digit is squashed into a sliver, ~1% of raw draws at σ = 5 px) are drawn again, so
    every sample is a legible perspective view. ``min_area=0`` keeps only the convexity rule.

    Args:
        canvas_size: side of the output canvas (the paper: 28, the digit's own size).
        scale: ``(low, high)`` of the uniform scale applied first.
        corner_std: standard deviation σ in pixels of each corner's displacement.
        min_area: smallest accepted quad area as a fraction of the scaled digit's square.
        digit_size: side of the source images (28 for MNIST).
    """

    def __init__(
        self,
        canvas_size: int = 28,
        scale: tuple[float, float] | list[float] = (0.75, 1.0),
        corner_std: float = 5.0,
        min_area: float = 0.4,
        digit_size: int = 28,
    ) -> None:
        low, high = _scale_range(scale)
        if corner_std < 0:
            raise ValueError(f"corner_std must be >= 0, got {corner_std}")
        if not 0 <= min_area < 1:
            raise ValueError(f"min_area must be in [0, 1), got {min_area}")
        self.canvas_size = canvas_size
        self.scale = (low, high)
        self.corner_std = float(corner_std)
        self.min_area = float(min_area)
        self.digit_size = digit_size
        self._family = ProjectiveTransform()

    _SQUARE = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> Params:
        scale = _uniform(n, *self.scale, generator, device)
        square = torch.tensor(self._SQUARE, device=device)
        noise = torch.randn(n, 4, 2, generator=generator, device=device) * self.corner_std
        half = scale.view(-1, 1, 1) * (self.digit_size / 2)
        for _ in range(20):
            corners = square * half + noise
            area = self._area(corners) / (2 * half.view(-1)) ** 2
            bad = ~self._convex(corners) | (area < self.min_area)
            if not bad.any():
                break
            redraw = torch.randn(n, 4, 2, generator=generator, device=device) * self.corner_std
            noise = torch.where(bad.view(-1, 1, 1), redraw, noise)
        return {"scale": scale, "corners": noise}

    @staticmethod
    def _area(corners: Tensor) -> Tensor:
        """Shoelace area ``(n,)`` of quads ``(n, 4, 2)`` given in order."""
        x, y = corners[..., 0], corners[..., 1]
        return 0.5 * (x * y.roll(-1, dims=1) - x.roll(-1, dims=1) * y).sum(dim=1).abs()

    @staticmethod
    def _convex(corners: Tensor) -> Tensor:
        """``(n, 4, 2)`` → ``(n,)``: True where the quad turns the same way at every corner."""
        edges = corners.roll(-1, dims=1) - corners
        nxt = edges.roll(-1, dims=1)
        cross = edges[..., 0] * nxt[..., 1] - edges[..., 1] * nxt[..., 0]
        return (cross > 0).all(dim=1)

    def _landed(self, params: Params, side: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The unit square ``(4, 2)`` and where each corner of the digit lands on the canvas,
        ``(n, 4, 2)`` in canvas-normalised units."""
        square = torch.tensor(self._SQUARE, device=params["scale"].device, dtype=dtype)
        half = params["scale"].to(dtype).view(-1, 1, 1) * (side / self.canvas_size)
        return square, square * half + params["corners"].to(dtype) * (2.0 / self.canvas_size)

    def render(self, digits: Tensor, params: Params, pool: Tensor | None = None) -> Tensor:
        square, landed = self._landed(params, digits.shape[-1], digits.dtype)
        theta = homography_from_points(landed, square.expand_as(landed))
        return warp(digits, self._family, theta, (self.canvas_size, self.canvas_size))

    def pose_record(self, params: Params, n: int) -> PoseRecord:
        """The homography taking the digit's corners to where they landed, in pixels."""
        square, landed = self._landed(params, self.digit_size, torch.float64)
        theta = homography_from_points(square.expand_as(landed), landed)
        normalised = self._family.to_matrix(theta)
        homography = pixel_homography(normalised, self.digit_size, self.canvas_size)
        return PoseRecord.from_homography(homography.float(), self.digit_size)


class RandomElastic(Distortion):
    """E: a smooth random displacement field (Simard et al., 2003).

    Per pixel, noise uniform in ``[-1, 1]`` is blurred by a Gaussian of ``sigma`` pixels and
    scaled by ``alpha`` pixels. Defaults ``alpha=34, sigma=4`` are Simard's MNIST setting:
    strokes bend and thicken locally while the digit stays legible (see the gallery).
    """

    def __init__(self, canvas_size: int = 28, alpha: float = 34.0, sigma: float = 4.0) -> None:
        if alpha < 0 or sigma <= 0:
            raise ValueError(f"elastic needs alpha >= 0 and sigma > 0, got {alpha}, {sigma}")
        self.canvas_size = canvas_size
        self.alpha = float(alpha)
        self.sigma = float(sigma)

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> Params:
        side = self.canvas_size
        noise = torch.rand(n, 2, side, side, generator=generator, device=device) * 2 - 1
        return {"noise": noise}

    def render(self, digits: Tensor, params: Params, pool: Tensor | None = None) -> Tensor:
        if digits.shape[-1] != self.canvas_size:
            raise ValueError(
                f"RandomElastic warps in place: digits are {digits.shape[-1]} px, "
                f"canvas_size={self.canvas_size}"
            )
        field = smooth_displacement(params["noise"].to(digits.dtype), self.sigma, self.alpha)
        return sample(digits, displacement_grid(field))

    def pose_record(self, params: Params, n: int) -> PoseRecord:
        """The digit box's corners after the field (the warp is in place: digit = canvas).

        A corner goes to the canvas point whose displacement reads it (solved by
        :func:`~stnlab.geometry.displacement_preimage`); there is no homography.
        """
        field = smooth_displacement(params["noise"].float(), self.sigma, self.alpha)
        box = box_corners(self.canvas_size, centred=False).to(field.device)
        corners = displacement_preimage(field, box.expand(n, 4, 2))
        return PoseRecord(corners, None, self.canvas_size)


class ClutteredPlacement(Distortion):
    """TC: the digit at a random position on a large canvas plus patches of other digits.

    Each of ``num_patches`` patches is a ``patch_size``² crop at a random place of another
    random digit of the same set (of the batch, for training), pasted at a random place of
    the canvas. Pasting takes the maximum, so clutter only adds ink.

    Args:
        canvas_size: side of the canvas (the paper: 60).
        num_patches: clutter patches per image (the paper: 6).
        patch_size: side of each patch in pixels (the paper: 6).
        digit_size: side of the source images (28 for MNIST).
    """

    def __init__(
        self,
        canvas_size: int = 60,
        num_patches: int = 6,
        patch_size: int = 6,
        digit_size: int = 28,
    ) -> None:
        if num_patches < 0:
            raise ValueError(f"num_patches must be >= 0, got {num_patches}")
        if not 0 < patch_size <= min(canvas_size, digit_size):
            raise ValueError(
                f"patch_size={patch_size} must be between 1 and "
                f"min(canvas_size={canvas_size}, digit size {digit_size})"
            )
        self.canvas_size = canvas_size
        self.num_patches = num_patches
        self.patch_size = patch_size
        self.digit_size = digit_size
        self._place = RandomSimilarity(
            canvas_size, max_angle=0.0, max_shift=None, digit_size=digit_size
        )

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> Params:
        params = self._place.sample(n, generator, device)
        k, p = self.num_patches, self.patch_size
        offset = torch.randint(1, max(n, 2), (n, k), generator=generator, device=device)
        params["source"] = (torch.arange(n, device=device).unsqueeze(1) + offset) % n
        params["crop"] = torch.randint(
            0, self.digit_size - p + 1, (n, k, 2), generator=generator, device=device
        )
        params["paste"] = torch.randint(
            0, self.canvas_size - p + 1, (n, k, 2), generator=generator, device=device
        )
        return params

    def pose_record(self, params: Params, n: int) -> PoseRecord:
        """The digit's placement (clutter patches are not part of its pose)."""
        return self._place.pose_record(params, n)

    def render(self, digits: Tensor, params: Params, pool: Tensor | None = None) -> Tensor:
        digit, clutter = self.render_layers(digits, params, pool)
        return digit if clutter is None else torch.maximum(digit, clutter)

    def render_layers(
        self, digits: Tensor, params: Params, pool: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """The digit alone and the clutter alone, each ``(B, C, S, S)``; :meth:`render` is
        their pixelwise maximum. The clutter is ``None`` with ``num_patches = 0``."""
        canvas = self._place.render(digits, params)
        if self.num_patches == 0:
            return canvas, None
        pool = digits if pool is None else pool
        b, c, s, _ = canvas.shape
        p, k = self.patch_size, self.num_patches
        steps = torch.arange(p, device=digits.device)
        # Gather (B, K, C, p, p) patches: rows/cols of each crop in its source digit.
        rows = (params["crop"][..., 1, None] + steps).view(b, k, 1, p, 1)
        cols = (params["crop"][..., 0, None] + steps).view(b, k, 1, 1, p)
        src = params["source"].view(b, k, 1, 1, 1)
        chans = torch.arange(c, device=digits.device).view(1, 1, c, 1, 1)
        patches = pool[src, chans, rows, cols]
        # Scatter them onto the canvas with max (flat indices into each (C, S·S) image).
        prow = (params["paste"][..., 1, None] + steps).view(b, k, 1, p, 1)
        pcol = (params["paste"][..., 0, None] + steps).view(b, k, 1, 1, p)
        flat = (prow * s + pcol).expand(b, k, c, p, p)
        flat = flat + torch.arange(c, device=digits.device).view(1, 1, c, 1, 1) * s * s
        out = (
            torch.zeros_like(canvas)
            .reshape(b, c * s * s)
            .scatter_reduce(
                1, flat.reshape(b, -1), patches.reshape(b, -1).to(canvas.dtype), reduce="amax"
            )
        )
        return canvas, out.view(b, c, s, s)
