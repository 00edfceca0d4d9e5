"""Pose recovery: how much of the spread of digit poses a transformer removes.

The distortion generator knows where it put each digit: the four corners of the digit's
box on the canvas. A spatial transformer's sampling grid maps its *output* coordinates to
*input* coordinates; inverting that map at the corners says where each digit's box lands
on the transformer's output. A transformer that undid the distortion sends every digit's
box to the same place, whatever place that is.

Conventions:

* points are ``(x, y)`` with y down; *normalised* coordinates span ``[-1, 1]`` across an
  image (as the sampler's, ``align_corners=False``); *pixel* coordinates put the image's
  top-left edge at ``(0, 0)`` and its bottom-right edge at ``(S, S)``;
* corners come in the order top-left, top-right, bottom-right, bottom-left;
* angles are in degrees, counter-clockwise on screen positive (as in
  :func:`~stnlab.geometry.placement_theta`).

The spread of a set of corner quads ``(N, 4, 2)`` is :func:`pose_spread`: the RMS distance
of each corner from that corner's mean over the set, divided by the RMS distance of the
corners from their own quad's centre (the boxes' size). Dividing by the size makes it a
measure of pose alone: a transformer that shrinks every digit by the same factor leaves it
unchanged instead of scoring for it. *Pose undone* is ``1 - spread_after / spread_before``:
1 when every digit comes out in one pose, 0 for the identity, below 0 when the transformer
adds variation.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from stnlab.geometry.transforms import TPSTransform, TransformFamily

POSE_METRICS = (
    "undone",
    "spread_before",
    "spread_after",
    "angle_std_before",
    "angle_std_after",
    "log_scale_std_before",
    "log_scale_std_after",
    "shift_std_before",
    "shift_std_after",
    "rotation_undone",
)
"""The keys of :func:`pose_statistics`, in the order tables show them."""


def box_corners(size: float, *, centred: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """Corners ``(4, 2)`` of a ``size``-pixel square: about its centre, or from its top-left.

    >>> box_corners(28)
    tensor([[-14., -14.],
            [ 14., -14.],
            [ 14.,  14.],
            [-14.,  14.]])
    >>> box_corners(2, centred=False)
    tensor([[0., 0.],
            [2., 0.],
            [2., 2.],
            [0., 2.]])
    """
    unit = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=dtype)
    corners = unit * (size / 2)
    return corners if centred else corners + size / 2


def pixel_matrix(size: float, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """3×3 matrix taking normalised coordinates of a ``size``-pixel image to pixels.

    >>> pixel_matrix(28) @ torch.tensor([-1.0, 1.0, 1.0])
    tensor([ 0., 28.,  1.])
    """
    half = size / 2
    return torch.tensor([[half, 0.0, half], [0.0, half, half], [0.0, 0.0, 1.0]], dtype=dtype)


def apply_homography(matrix: Tensor, points: Tensor) -> Tensor:
    """Points ``(B, M, 2)`` through 3×3 matrices ``(B, 3, 3)`` → ``(B, M, 2)``.

    >>> shift = torch.tensor([[[1.0, 0, 2], [0, 1, 3], [0, 0, 1]]])
    >>> apply_homography(shift, torch.zeros(1, 1, 2))
    tensor([[[2., 3.]]])
    """
    homog = torch.cat((points, torch.ones_like(points[..., :1])), dim=-1)
    mapped = homog @ matrix.transpose(-1, -2)
    return mapped[..., :2] / mapped[..., 2:]


def _tps_weights(family: TPSTransform, theta: Tensor) -> Tensor:
    """The spline's coefficients ``(B, K+3, 2)`` for θ ``(B, 2K)``: one per control point's
    kernel, then the affine part's constant, x and y terms."""
    k = family.num_params // 2
    return family.inverse.to(theta) @ theta.view(-1, k, 2)


def _tps_at(
    control: Tensor, weights: Tensor, points: Tensor, *, jacobian: bool = False
) -> tuple[Tensor, Tensor | None]:
    """A thin-plate spline (``weights`` ``(B, K+3, 2)`` over ``control`` ``(K, 2)``) at
    ``points`` ``(B, M, 2)``: values ``(B, M, 2)`` and, if asked, the Jacobian
    ``(B, M, 2, 2)`` (``[..., i, j]`` = d value_i / d point_j)."""
    k = len(control)
    diff = points.unsqueeze(-2) - control  # (B, M, K, 2)
    r2 = diff.square().sum(-1)
    log_r2 = torch.log(r2.clamp(min=1e-12))
    value = (r2 * log_r2) @ weights[:, :k] + weights[:, k : k + 1] + points @ weights[:, k + 1 :]
    if not jacobian:
        return value, None
    # d(r² log r²)/dp = 2 (p - c) (log r² + 1)
    bend = torch.einsum("bmk,bmkj,bki->bmij", 2 * (log_r2 + 1), diff, weights[:, :k])
    return value, bend + weights[:, k + 1 :].transpose(1, 2).unsqueeze(1)


def map_points(family: TransformFamily, theta: Tensor, points: Tensor) -> Tensor:
    """Where output points ``(B, M, 2)`` read the input under θ ``(B, P)``: ``(B, M, 2)``.

    The same map as ``family.grid`` (normalised coordinates), at any points rather than at
    pixel centres. Families with a matrix form and the thin-plate spline are supported.

    >>> from stnlab.geometry import AttentionTransform
    >>> map_points(AttentionTransform(), torch.tensor([[0.5, 0.1, 0.0]]), torch.ones(1, 1, 2))
    tensor([[[0.6000, 0.5000]]])
    """
    if isinstance(family, TPSTransform):
        weights = _tps_weights(family, theta.to(points))
        return _tps_at(family.control.to(points), weights, points)[0]
    return apply_homography(family.to_matrix(theta).to(points), points)


def invert_points(
    family: TransformFamily, theta: Tensor, targets: Tensor, steps: int = 6
) -> Tensor:
    """The output points ``(B, M, 2)`` that read the input at ``targets`` ``(B, M, 2)``.

    The inverse of :func:`map_points`, in normalised coordinates: where a point of the
    transformer's input appears on its output. Exact (a 3×3 inverse) for families with a
    matrix form; for the thin-plate spline, ``steps`` Newton iterations (analytic
    Jacobian) started from the inverse of the spline's affine part, which is already exact
    when the control points move affinely. Computed in float64, returned in the dtype of
    ``targets``.

    >>> from stnlab.geometry import SimilarityTransform
    >>> theta = torch.tensor([[math.pi / 2, 2.0, 0.0, 0.0]])  # reads 2× farther, turned
    >>> invert_points(SimilarityTransform(), theta, torch.tensor([[[0.0, 1.0]]])).round(
    ...     decimals=4).abs()
    tensor([[[0.5000, 0.0000]]])
    """
    points = targets.double()
    theta = theta.double()
    if not isinstance(family, TPSTransform):
        inverse = _inverse_or_nan(family.to_matrix(theta).double())
        return apply_homography(inverse, points).to(targets.dtype)
    k = family.num_params // 2
    control = family.control.to(points)
    weights = _tps_weights(family, theta)
    linear, offset = weights[:, k + 1 :].transpose(1, 2), weights[:, k]  # (B, 2, 2), (B, 2)
    p = (points - offset.unsqueeze(1)) @ _inverse_or_nan(linear).transpose(1, 2)
    for _ in range(steps):
        value, jac = _tps_at(control, weights, p, jacobian=True)
        assert jac is not None
        residual = value - points
        a, b, c, d = jac[..., 0, 0], jac[..., 0, 1], jac[..., 1, 0], jac[..., 1, 1]
        det = a * d - b * c  # 2×2 solve, written out: far faster than batched LAPACK
        step_x = (d * residual[..., 0] - b * residual[..., 1]) / det
        step_y = (a * residual[..., 1] - c * residual[..., 0]) / det
        p = p - torch.stack((step_x, step_y), dim=-1)
    return p.to(targets.dtype)


def _inverse_or_nan(matrices: Tensor) -> Tensor:
    """Inverses of ``(B, n, n)`` matrices; NaN for a singular one (a degenerate warp) instead
    of an error, so one collapsed sample cannot stop a run."""
    inverse, info = torch.linalg.inv_ex(matrices)
    return torch.where((info != 0).view(-1, 1, 1), torch.nan, inverse)


def similarity_fit(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity taking ``src`` ``(M, 2)`` to each of ``dst`` ``(N, M, 2)``.

    Returns ``(angle, log_scale, shift)``: the rotation ``(N,)`` in degrees
    (counter-clockwise on screen, y down), the log of the scale ``(N,)`` and where the
    centroid of ``src`` lands, ``(N, 2)`` (the centroid of ``dst``). With ``src`` the
    digit's box about its centre in pixels and ``dst`` its corners on a canvas measured
    from the canvas centre, these are the digit's angle, log-scale and shift (pixels).

    >>> src = box_corners(2)
    >>> turned = src @ torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # 90° counter-clockwise
    >>> angle, log_scale, shift = similarity_fit(src, 3 * turned[None] + 5)
    >>> angle.round(), log_scale.exp().round(), shift
    (tensor([90.]), tensor([3.]), tensor([[5., 5.]]))
    """
    zs = torch.complex(*(src - src.mean(dim=-2, keepdim=True)).double().unbind(-1))
    centre = dst.mean(dim=-2)
    zd = torch.complex(*(dst - centre.unsqueeze(-2)).double().unbind(-1))
    a = (zs.conj() * zd).sum(dim=-1) / (zs.abs() ** 2).sum(dim=-1)
    # y points down: a turn of φ counter-clockwise on screen multiplies by exp(-iφ).
    angle = -torch.rad2deg(torch.angle(a))
    return angle.to(dst.dtype), torch.log(a.abs()).to(dst.dtype), centre


def circular_std(angle: Tensor) -> Tensor:
    """Circular standard deviation ``sqrt(-2 ln R)`` of angles ``(N,)`` in degrees → ``()``.

    ``R`` is the length of the mean unit vector. It is close to the ordinary standard
    deviation for tightly grouped angles, ignores the ±180° wrap, and grows without bound
    as the angles spread over the whole circle (uniform on ±90°: 54.5°).

    >>> circular_std(torch.tensor([179.0, -179.0])).round(decimals=3)
    tensor(1.)
    >>> circular_std(torch.tensor([10.0, 10.0]))
    tensor(0.)
    """
    rad = torch.deg2rad(angle.double())
    length = torch.complex(torch.cos(rad), torch.sin(rad)).mean().abs().clamp(max=1.0)
    return torch.rad2deg(torch.sqrt(2 * torch.log(1 / length))).to(angle.dtype)


def pose_spread(corners: Tensor) -> Tensor:
    """Pose spread of quads ``(N, 4, 2)`` (any points ``(N, M, 2)``) → ``()``, unitless.

    The RMS distance of every corner from its mean position over the set, divided by the
    RMS distance of the corners from their own quad's centre (the boxes' size): 0 when all
    quads coincide; the same for a set and a uniformly scaled copy of it.

    >>> square = box_corners(2)
    >>> pose_spread(torch.stack((square, square)))
    tensor(0.)
    >>> pose_spread(torch.stack((square + 1, square - 1)))  # shifted ±1 at size √2
    tensor(1.)
    """
    points = corners.double()
    deviation = points - points.mean(dim=0, keepdim=True)
    size = points - points.mean(dim=1, keepdim=True)
    spread = deviation.square().sum(-1).mean().sqrt() / size.square().sum(-1).mean().sqrt()
    return spread.to(corners.dtype)


def shift_spread(shift: Tensor) -> Tensor:
    """RMS distance ``()`` of shifts ``(N, 2)`` from their mean (2-D standard deviation)."""
    return (shift - shift.mean(dim=0)).square().sum(-1).mean().sqrt()


def pose_statistics(src: Tensor, before: Tensor, after: Tensor) -> dict[str, float]:
    """Pose recovery of one set: digit boxes ``src`` ``(4, 2)`` placed at ``before`` and
    ``after`` ``(N, 4, 2)`` (the canvas, then the transformer's output; pixels from the
    centre, both in the same unit).

    Keys (:data:`POSE_METRICS`): ``undone`` = 1 − spread_after / spread_before (NaN when
    the set has no pose spread to undo), the two spreads (:func:`pose_spread`), and for
    the residual similarity pose (:func:`similarity_fit`) the circular std of the angle
    (degrees), the std of the log-scale and the 2-D std of the shift (pixels), each
    ``_before`` and ``_after``, and ``rotation_undone`` = 1 − angle_std_after /
    angle_std_before (:func:`rotation_undone`). A warp that is degenerate for some digit
    makes the ``_after`` values (and ``undone``) NaN or infinite.

    >>> src = box_corners(28)
    >>> before = torch.stack((src + torch.tensor([3.0, 0.0]), src - torch.tensor([3.0, 0.0])))
    >>> stats = pose_statistics(src, before, before)
    >>> stats["undone"], stats["shift_std_before"], stats["angle_std_after"]
    (0.0, 3.0, 0.0)
    >>> pose_statistics(src, before, torch.stack((src, src)))["undone"]
    1.0
    """
    spread_before, spread_after = float(pose_spread(before)), float(pose_spread(after))
    undone = 1.0 - spread_after / spread_before if spread_before > 1e-6 else math.nan
    stats = {"undone": undone, "spread_before": spread_before, "spread_after": spread_after}
    for when, corners in (("before", before), ("after", after)):
        angle, log_scale, shift = similarity_fit(src.to(corners), corners)
        stats[f"angle_std_{when}"] = float(circular_std(angle))
        stats[f"log_scale_std_{when}"] = float(log_scale.double().std(unbiased=False))
        stats[f"shift_std_{when}"] = float(shift_spread(shift.double()))
    stats["rotation_undone"] = _undone(stats["angle_std_before"], stats["angle_std_after"])
    return {key: _clean(stats[key]) for key in POSE_METRICS}


def rotation_undone(angle_before: Tensor, angle_after: Tensor) -> float:
    """The share of the spread of digit angles ``(N,)`` (degrees) that a transformer
    removed: 1 − circular std after / before (:func:`circular_std`); 1 when every digit
    comes out at one angle, 0 when the spread is unchanged, NaN when the set has no
    rotation to undo (a spread below 0.01°).

    >>> before = torch.tensor([-40.0, 0.0, 40.0])
    >>> round(rotation_undone(before, before / 4), 2)
    0.75
    >>> rotation_undone(torch.zeros(3), torch.ones(3))
    nan
    """
    after = float(circular_std(angle_after.double()))
    return _clean(_undone(float(circular_std(angle_before.double())), after))


def _undone(before: float, after: float) -> float:
    return 1.0 - after / before if before > 1e-2 else math.nan


def _clean(value: float) -> float:
    """Round-off noise of exact zeros (a perfect canonicaliser) shown as 0."""
    return 0.0 if abs(value) < 1e-9 else value


@dataclasses.dataclass
class PoseRecord:
    """Where a distortion put each digit's box on the canvas.

    Attributes:
        corners: ``(N, 4, 2)`` canvas pixels (origin at the canvas's top-left edge, y
            down) of the digit box's top-left, top-right, bottom-right and bottom-left
            corners.
        homography: ``(N, 3, 3)`` digit pixels → canvas pixels, for distortions that are
            one (rotation, scale, shift, projective, placement); ``None`` for elastic.
        digit_size: side of the digit's box in its own pixels (28 for MNIST).
        digit_ink, clutter_ink: ``(N, C, S, S)`` ``uint8``, the digit's and the clutter's
            ink on the canvas, each alone, for distortions that add clutter (TC); ``None``
            elsewhere (all ink on the canvas is the digit's).
    """

    corners: Tensor
    homography: Tensor | None
    digit_size: int
    digit_ink: Tensor | None = None
    clutter_ink: Tensor | None = None

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: slice | Tensor) -> PoseRecord:
        def pick(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[index]

        return PoseRecord(
            self.corners[index],
            pick(self.homography),
            self.digit_size,
            pick(self.digit_ink),
            pick(self.clutter_ink),
        )

    @staticmethod
    def cat(records: list[PoseRecord]) -> PoseRecord:
        """Records of consecutive chunks as one."""

        def joined(field: str) -> Tensor | None:
            parts = [getattr(r, field) for r in records]
            return None if any(p is None for p in parts) else torch.cat(parts)

        corners = torch.cat([r.corners for r in records])
        return PoseRecord(
            corners,
            joined("homography"),
            records[0].digit_size,
            joined("digit_ink"),
            joined("clutter_ink"),
        )

    @staticmethod
    def from_homography(homography: Tensor, digit_size: int) -> PoseRecord:
        """The record of ``(N, 3, 3)`` digit-pixel → canvas-pixel homographies."""
        box = box_corners(digit_size, centred=False, dtype=homography.dtype)
        box = box.to(homography.device).expand(len(homography), 4, 2)
        return PoseRecord(apply_homography(homography, box), homography, digit_size)
