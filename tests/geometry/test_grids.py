"""Grids of 3×3 warps: agreement with torch's affine_grid, and a cache that survives tracing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stnlab.geometry import ALIGN_CORNERS, AffineTransform, ProjectiveTransform
from stnlab.geometry.grids import affine_grid, homogeneous_points, matrix_grid


def test_affine_grid_matches_torch() -> None:
    mat = torch.eye(2, 3) + 0.2 * torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    ref = F.affine_grid(mat, [4, 1, 6, 9], align_corners=ALIGN_CORNERS)
    assert torch.allclose(affine_grid(mat, (6, 9)), ref, atol=1e-6)
    homography = torch.cat((mat, torch.tensor([0.0, 0.0, 1.0]).expand(4, 1, 3)), dim=1)
    assert torch.allclose(matrix_grid(homography, (6, 9)), ref, atol=1e-6)


def test_points_are_built_once_per_size_device_and_dtype() -> None:
    cpu = torch.device("cpu")
    first = homogeneous_points(5, 7, cpu, torch.float32)
    assert homogeneous_points(5, 7, cpu, torch.float32) is first
    assert homogeneous_points(5, 7, cpu, torch.float64).dtype == torch.float64
    assert homogeneous_points(7, 5, cpu, torch.float32).shape == (1, 35, 3)


class _BothGrids(nn.Module):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.affine, self.projective = AffineTransform(), ProjectiveTransform()

    def forward(self, affine_theta: torch.Tensor, projective_theta: torch.Tensor) -> torch.Tensor:
        return self.affine.grid(affine_theta, self.size) + self.projective.grid(
            projective_theta, self.size
        )


def test_export_leaves_no_traced_tensor_in_the_cache() -> None:
    # A size no other test uses: torch.export is the first to ask for its points. Had the
    # cache kept what tracing built (a fake tensor), the eager calls below would fail.
    size = (11, 13)
    module = _BothGrids(size)
    inputs = (
        AffineTransform().identity().expand(2, -1),
        ProjectiveTransform().identity().expand(2, -1),
    )
    exported = torch.export.export(module, inputs)
    points = homogeneous_points(*size, torch.device("cpu"), torch.float32)
    assert type(points) is torch.Tensor
    eye = torch.eye(2, 3).expand(2, 2, 3)
    expected = 2 * F.affine_grid(eye, [2, 1, *size], align_corners=ALIGN_CORNERS)
    assert torch.allclose(module(*inputs), expected, atol=1e-6)
    assert torch.allclose(exported.module()(*inputs), expected, atol=1e-6)
