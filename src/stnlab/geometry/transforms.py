"""Transform families: θ ``(B, P)`` → sampling grid ``(B, H, W, 2)``.

θ maps each *output* pixel to the point of the *input* it reads (the paper's grid
generator ``T_θ(G)``): the identity θ copies the input, a θ that scales by 0.5 zooms in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stnlab.geometry.grids import affine_grid, base_grid, matrix_grid


class TransformFamily(nn.Module):
    """A family of warps with ``num_params`` parameters and a known identity θ.

    Subclasses implement :meth:`grid`; they are modules so that any buffers they hold
    (e.g. a thin-plate-spline kernel) move with the model.
    """

    name: str = "base"
    num_params: int = 0

    def identity(self) -> Tensor:
        """The θ ``(P,)`` whose grid is the identity."""
        raise NotImplementedError

    def window(self, scale: float) -> Tensor:
        """The θ ``(P,)`` that reads a centred square window, ``scale`` × the input's side,
        onto the whole output: a zoomed-in identity for ``scale < 1``, the identity at 1.

        Families without an isotropic scale (translation) have only ``scale = 1``.
        """
        if scale == 1.0:
            return self.identity()
        raise ValueError(
            f"the {self.name} family cannot start zoomed: model.net.transformer.init_scale="
            f"{scale} needs attention, similarity, affine, projective or tps (or 1.0)"
        )

    def grid(self, theta: Tensor, size: tuple[int, int]) -> Tensor:
        """Sampling grid ``(B, H, W, 2)`` for θ ``(B, P)`` and output ``size = (H, W)``."""
        raise NotImplementedError

    def forward(self, theta: Tensor, size: tuple[int, int]) -> Tensor:
        return self.grid(theta, size)

    def to_matrix(self, theta: Tensor) -> Tensor:
        """θ ``(B, P)`` → the warp as a 3×3 matrix ``(B, 3, 3)`` (families that have one)."""
        raise NotImplementedError(f"the {self.name} family has no matrix form")

    def check_theta(self, theta: Tensor) -> None:
        if theta.ndim != 2 or theta.shape[1] != self.num_params:
            raise ValueError(
                f"{type(self).__name__} expects θ of shape (B, {self.num_params}), "
                f"got {tuple(theta.shape)}"
            )

    def extra_repr(self) -> str:
        return f"num_params={self.num_params}"


def _homogeneous(mat: Tensor) -> Tensor:
    """``(B, 2, 3)`` → ``(B, 3, 3)`` with last row ``[0, 0, 1]``."""
    last = torch.zeros_like(mat[:, :1, :])
    last[..., 2] = 1.0
    return torch.cat((mat, last), dim=1)


class _AffineFamily(TransformFamily):
    """A family whose θ maps to a 2×3 affine matrix: its grid and 3×3 form follow from it."""

    def matrix(self, theta: Tensor) -> Tensor:
        """θ ``(B, P)`` → matrix ``(B, 2, 3)``."""
        raise NotImplementedError

    def to_matrix(self, theta: Tensor) -> Tensor:
        return _homogeneous(self.matrix(theta))

    def grid(self, theta: Tensor, size: tuple[int, int]) -> Tensor:
        return affine_grid(self.matrix(theta), size)


class AffineTransform(_AffineFamily):
    """General 2-D affine warp, θ = the 2×3 matrix ``[[a, b, tx], [c, d, ty]]`` row-major.

    >>> family = AffineTransform()
    >>> family.identity()
    tensor([1., 0., 0., 0., 1., 0.])
    >>> family.grid(family.identity()[None], (2, 2))[0, 0]
    tensor([[-0.5000, -0.5000],
            [ 0.5000, -0.5000]])
    """

    name = "affine"
    num_params = 6

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def window(self, scale: float) -> Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0])

    def matrix(self, theta: Tensor) -> Tensor:
        """θ ``(B, 6)`` → matrix ``(B, 2, 3)``."""
        self.check_theta(theta)
        return theta.view(-1, 2, 3)


class _ConstrainedAffine(_AffineFamily):
    """An affine sub-family with optional bounds on its translation and scale.

    Args:
        max_translation: bound |tx|, |ty| to this (normalised units) via ``tanh``; None = free.
        scale_range: bound the scale to ``(low, high)`` via a sigmoid; None = free. Both
            bounds help against the zoom-out collapse. A range around 1 keeps the identity
            θ exact; a range below 1 (a window that can only zoom in, e.g. ``[0.25,
            0.45]``) has no identity: start such a transformer at a window inside it
            (``init_scale``).
    """

    def __init__(
        self,
        max_translation: float | None = None,
        scale_range: tuple[float, float] | list[float] | None = None,
    ) -> None:
        super().__init__()
        if max_translation is not None and max_translation <= 0:
            raise ValueError(f"max_translation must be > 0 or null, got {max_translation}")
        if scale_range is not None:
            low, high = (float(v) for v in scale_range)
            if not 0 < low < high:
                raise ValueError(f"scale_range must satisfy 0 < low < high, got {scale_range}")
            scale_range = (low, high)
        self.max_translation = max_translation
        self.scale_range = scale_range

    def _translation(self, raw: Tensor) -> Tensor:
        if self.max_translation is None:
            return raw
        return self.max_translation * torch.tanh(raw / self.max_translation)

    def _raw_scale(self, scale: float) -> float:
        """The raw θ entry whose bounded scale is ``scale`` (the inverse of :meth:`_scale`)."""
        if self.scale_range is None:
            return scale
        low, high = self.scale_range
        if not low < scale < high:
            raise ValueError(
                f"model.net.transformer.init_scale={scale} is outside the family's "
                f"scale_range ({low}, {high}); start at a window inside it"
            )
        q = (scale - low) / (high - low)
        return 1.0 + math.log(q / (1 - q)) - self._offset()

    def _unit_scale(self) -> float:
        """The raw θ entry of scale 1 (the identity), or a ``ValueError`` for a range
        without it."""
        if self.scale_range is not None and not self.scale_range[0] < 1 < self.scale_range[1]:
            raise ValueError(
                f"{type(self).__name__} with scale_range {self.scale_range} has no identity: "
                "scale 1 is outside it"
            )
        return 1.0

    def _offset(self) -> float:
        """The sigmoid's offset: raw 1 maps to scale 1 when the range holds 1, else to the
        middle of the range."""
        assert self.scale_range is not None
        low, high = self.scale_range
        p = (1.0 - low) / (high - low)
        return math.log(p / (1 - p)) if 0 < p < 1 else 0.0

    def _scale(self, raw: Tensor) -> Tensor:
        """Raw scale → bounded scale; raw 1 maps to exactly 1 (the identity) when the range
        holds it."""
        if self.scale_range is None:
            return raw
        low, high = self.scale_range
        return low + (high - low) * torch.sigmoid(raw - 1.0 + self._offset())

    def extra_repr(self) -> str:
        return (
            f"num_params={self.num_params}, max_translation={self.max_translation}, "
            f"scale_range={self.scale_range}"
        )


class TranslationTransform(_ConstrainedAffine):
    """Shift only: θ = ``(tx, ty)`` in normalised units.

    >>> TranslationTransform().matrix(torch.tensor([[0.5, -0.25]]))
    tensor([[[ 1.0000,  0.0000,  0.5000],
             [ 0.0000,  1.0000, -0.2500]]])
    >>> TranslationTransform(max_translation=0.3).matrix(torch.tensor([[100.0, 0.0]]))[0, 0, 2]
    tensor(0.3000)
    """

    name = "translation"
    num_params = 2

    def identity(self) -> Tensor:
        return torch.zeros(2)

    def matrix(self, theta: Tensor) -> Tensor:
        self.check_theta(theta)
        t = self._translation(theta)
        one, zero = torch.ones_like(t[:, 0]), torch.zeros_like(t[:, 0])
        rows = (one, zero, t[:, 0], zero, one, t[:, 1])
        return torch.stack(rows, dim=1).view(-1, 2, 3)


class AttentionTransform(_ConstrainedAffine):
    """Isotropic scale and shift (the paper's "attention"): θ = ``(s, tx, ty)``.

    >>> family = AttentionTransform(scale_range=(0.5, 2.0))
    >>> family.matrix(family.identity()[None])  # the bounds keep the identity exact
    tensor([[[1., 0., 0.],
             [0., 1., 0.]]])
    """

    name = "attention"
    num_params = 3

    def identity(self) -> Tensor:
        return torch.tensor([self._unit_scale(), 0.0, 0.0])

    def window(self, scale: float) -> Tensor:
        """A centred window, ``scale`` × the input's side, within the scale bounds.

        >>> family = AttentionTransform(scale_range=(0.2, 1.5))
        >>> family.matrix(family.window(0.4)[None])[0, 0].round(decimals=4)
        tensor([0.4000, 0.0000, 0.0000])
        """
        return torch.tensor([self._raw_scale(scale), 0.0, 0.0])

    def matrix(self, theta: Tensor) -> Tensor:
        self.check_theta(theta)
        s, t = self._scale(theta[:, 0]), self._translation(theta[:, 1:])
        zero = torch.zeros_like(s)
        return torch.stack((s, zero, t[:, 0], zero, s, t[:, 1]), dim=1).view(-1, 2, 3)


class SimilarityTransform(_ConstrainedAffine):
    """Rotation, isotropic scale and shift: θ = ``(angle, s, tx, ty)``, angle in radians.

    An output point ``p`` reads the input at ``s · R(angle) · p + t``.

    >>> quarter_turn = torch.tensor([[math.pi / 2, 1.0, 0.0, 0.0]])
    >>> SimilarityTransform().matrix(quarter_turn).round(decimals=4).abs()
    tensor([[[0., 1., 0.],
             [1., 0., 0.]]])
    """

    name = "similarity"
    num_params = 4

    def identity(self) -> Tensor:
        return torch.tensor([0.0, self._unit_scale(), 0.0, 0.0])

    def window(self, scale: float) -> Tensor:
        return torch.tensor([0.0, self._raw_scale(scale), 0.0, 0.0])

    def matrix(self, theta: Tensor) -> Tensor:
        self.check_theta(theta)
        angle, s = theta[:, 0], self._scale(theta[:, 1])
        t = self._translation(theta[:, 2:])
        cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
        return torch.stack((cos, -sin, t[:, 0], sin, cos, t[:, 1]), dim=1).view(-1, 2, 3)


class ProjectiveTransform(TransformFamily):
    """Homography with its last entry fixed to 1: θ = ``[h11, h12, h13, h21, h22, h23, h31, h32]``.

    An input point is ``(x', y') = ((h11 x + h12 y + h13) / w, (h21 x + h22 y + h23) / w)``
    with ``w = h31 x + h32 y + 1``, ``(x, y)`` the output pixel in normalised coordinates.

    >>> family = ProjectiveTransform()
    >>> grid = family.grid(family.identity()[None], (4, 4))
    >>> bool(torch.allclose(grid[0], base_grid(4, 4)))
    True
    """

    name = "projective"
    num_params = 8

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    def window(self, scale: float) -> Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0, 0.0, 0.0])

    def matrix(self, theta: Tensor) -> Tensor:
        """θ ``(B, 8)`` → homography ``(B, 3, 3)``."""
        self.check_theta(theta)
        one = torch.ones_like(theta[:, :1])
        return torch.cat((theta, one), dim=1).view(-1, 3, 3)

    def to_matrix(self, theta: Tensor) -> Tensor:
        return self.matrix(theta)

    def grid(self, theta: Tensor, size: tuple[int, int]) -> Tensor:
        return matrix_grid(self.matrix(theta), size)


def homography_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """θ ``(B, 8)`` of the homography taking points ``src`` to ``dst`` (each ``(B, 4, 2)``).

    Solves the 8×8 direct linear system for all ``B`` at once.

    >>> square = torch.tensor([[[-1.0, -1], [1, -1], [1, 1], [-1, 1]]])
    >>> homography_from_points(square, square).round(decimals=5).abs()
    tensor([[1., 0., 0., 0., 1., 0., 0., 0.]])
    """
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack((x, y, one, zero, zero, zero, -u * x, -u * y), dim=-1)
    rows_v = torch.stack((zero, zero, zero, x, y, one, -v * x, -v * y), dim=-1)
    system = torch.cat((rows_u, rows_v), dim=1)  # (B, 8, 8)
    rhs = torch.cat((u, v), dim=1).unsqueeze(-1)  # (B, 8, 1)
    return torch.linalg.solve(system, rhs).squeeze(-1)


class TPSTransform(TransformFamily):
    """Thin-plate spline with ``K = grid_size²`` control points on a regular grid.

    θ ``(B, 2K)`` holds where each control point reads the input (``(x, y)`` pairs,
    row-major over the control grid); the identity θ is the control grid itself. The
    spline interpolates those K correspondences with minimal bending energy, and
    reproduces any affine motion of the control points exactly.

    The ``(K+3)²`` kernel system depends only on the control grid: it is inverted once at
    construction, and the basis of each output size is cached, so a grid costs one
    ``(H·W, K) @ (B, K, 2)`` product.

    Args:
        grid_size: control points per side (4 → K = 16, the paper's setting).
        span: control points cover ``[-span, span]²`` in normalised coordinates.

    >>> tps = TPSTransform(grid_size=4)
    >>> tps.num_params, tps.identity().shape
    (32, torch.Size([32]))
    >>> grid = tps.grid(tps.identity()[None], (6, 6))
    >>> bool((grid[0] - base_grid(6, 6)).abs().max() < 1e-5)
    True
    """

    name = "tps"

    def __init__(self, grid_size: int = 4, span: float = 0.9) -> None:
        super().__init__()
        if grid_size < 2:
            raise ValueError(f"tps grid_size must be >= 2, got {grid_size}")
        self.grid_size = grid_size
        self.num_params = 2 * grid_size * grid_size
        axis = torch.linspace(-span, span, grid_size, dtype=torch.float64)
        gy, gx = torch.meshgrid(axis, axis, indexing="ij")
        control = torch.stack((gx.flatten(), gy.flatten()), dim=1)  # (K, 2)
        k = len(control)
        system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
        system[:k, :k] = self._kernel(control, control)
        system[:k, k] = system[k, :k] = 1.0
        system[:k, k + 1 :] = control
        system[k + 1 :, :k] = control.T
        self.register_buffer("control", control.float())
        # Only the first K columns matter: the right-hand side is (θ; 0, 0, 0).
        self.register_buffer("inverse", torch.linalg.inv(system)[:, :k].contiguous())
        self._basis: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    @staticmethod
    def _kernel(a: Tensor, b: Tensor) -> Tensor:
        """U(r) = r² log r² between point sets ``(N, 2)`` and ``(M, 2)`` → ``(N, M)``."""
        d2 = (a[:, None, :] - b[None, :, :]).square().sum(-1)
        return d2 * torch.log(d2.clamp(min=1e-12))

    def identity(self) -> Tensor:
        return self.control.flatten().clone()

    def window(self, scale: float) -> Tensor:
        return self.control.flatten() * scale

    def _output_basis(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype):
        key = (*size, device, dtype)
        if key not in self._basis:
            points = base_grid(*size, dtype=torch.float64).view(-1, 2)
            control = self.control.double().cpu()
            ones = torch.ones(len(points), 1, dtype=torch.float64)
            features = torch.cat((self._kernel(points, control), ones, points), dim=1)
            basis = features @ self.inverse.double().cpu()  # (H·W, K)
            self._basis[key] = basis.to(device=device, dtype=dtype)
        return self._basis[key]

    def grid(self, theta: Tensor, size: tuple[int, int]) -> Tensor:
        self.check_theta(theta)
        basis = self._output_basis(size, theta.device, theta.dtype)
        targets = theta.view(-1, self.num_params // 2, 2)  # (B, K, 2)
        return (basis @ targets).view(-1, size[0], size[1], 2)

    def extra_repr(self) -> str:
        return f"num_params={self.num_params}, grid_size={self.grid_size}"


FAMILIES: dict[str, type[TransformFamily]] = {
    family.name: family
    for family in (
        TranslationTransform,
        AttentionTransform,
        SimilarityTransform,
        AffineTransform,
        ProjectiveTransform,
        TPSTransform,
    )
}


def make_family(name: str, **kwargs: object) -> TransformFamily:
    """Build a transform family by name, e.g. ``make_family("tps", grid_size=4)``.

    >>> make_family("affine")
    AffineTransform(num_params=6)
    >>> make_family("tps", grid_size=3).num_params
    18
    """
    try:
        return FAMILIES[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown transform family {name!r}; valid: {sorted(FAMILIES)}") from None


def placement_theta(
    angle_deg: Tensor,
    scale: Tensor,
    shift_px: Tensor,
    in_size: int,
    out_size: int,
) -> Tensor:
    """Affine θ ``(B, 6)`` that places an ``in_size`` image on an ``out_size`` canvas.

    The content is rotated by ``angle_deg`` ``(B,)`` counter-clockwise as seen on screen,
    scaled by ``scale`` ``(B,)`` about its centre, and its centre moved by ``shift_px``
    ``(B, 2)`` = (right, down) pixels from the canvas centre. Square images only.

    >>> theta = placement_theta(torch.zeros(1), torch.ones(1), torch.zeros(1, 2), 28, 28)
    >>> torch.equal(theta.abs(), AffineTransform().identity()[None])
    True
    """
    rad = angle_deg * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Content moves input point q to p = s R q + t (pixels from centres, y down), with
    # R = [[cos, sin], [-sin, cos]] turning counter-clockwise on screen. Sampling inverts
    # it: q = Rᵀ (p - t) / s, then both sides are converted to normalised coordinates.
    ratio = out_size / (in_size * scale)
    a, b = cos * ratio, -sin * ratio
    c, d = sin * ratio, cos * ratio
    tx, ty = shift_px[:, 0], shift_px[:, 1]
    to_norm = 2.0 / (in_size * scale)
    bx = -(cos * tx - sin * ty) * to_norm
    by = -(sin * tx + cos * ty) * to_norm
    return torch.stack((a, b, bx, c, d, by), dim=1)
