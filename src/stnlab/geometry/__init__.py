"""Differentiable geometry shared by the data (distortions) and the model (transformers).

A transform family turns a parameter vector θ of shape ``(B, P)`` into a sampling grid of
shape ``(B, H, W, 2)`` in normalised coordinates; :func:`sample` reads an image at that
grid. The same code warps clean digits into distorted ones and distorted inputs back.

Modules, bottom to top: ``grids`` (the coordinate convention, identity and 3×3-warp grids),
``fields`` (dense displacement grids), ``transforms`` (the families), ``sampler``
(reading images at a grid or a family's θ), ``pose`` and ``boxes`` (points and boxes
through a warp).

This package imports nothing else from stnlab and knows nothing of Lightning.
"""

from stnlab.geometry.boxes import box_iou, corners_box, output_box
from stnlab.geometry.fields import displacement_grid, displacement_preimage, smooth_displacement
from stnlab.geometry.grids import ALIGN_CORNERS, base_grid, grid_coverage, matrix_grid
from stnlab.geometry.pose import (
    POSE_METRICS,
    apply_homography,
    box_corners,
    circular_std,
    invert_points,
    map_points,
    pixel_matrix,
    pose_spread,
    pose_statistics,
    similarity_fit,
)
from stnlab.geometry.sampler import sample, warp
from stnlab.geometry.transforms import (
    FAMILIES,
    AffineTransform,
    AttentionTransform,
    ProjectiveTransform,
    SimilarityTransform,
    TPSTransform,
    TransformFamily,
    TranslationTransform,
    homography_from_points,
    make_family,
    placement_theta,
)

__all__ = [
    "ALIGN_CORNERS",
    "FAMILIES",
    "POSE_METRICS",
    "AffineTransform",
    "AttentionTransform",
    "ProjectiveTransform",
    "SimilarityTransform",
    "TPSTransform",
    "TransformFamily",
    "TranslationTransform",
    "apply_homography",
    "base_grid",
    "box_corners",
    "box_iou",
    "circular_std",
    "corners_box",
    "displacement_grid",
    "displacement_preimage",
    "grid_coverage",
    "homography_from_points",
    "invert_points",
    "make_family",
    "map_points",
    "matrix_grid",
    "output_box",
    "pixel_matrix",
    "placement_theta",
    "pose_spread",
    "pose_statistics",
    "sample",
    "similarity_fit",
    "smooth_displacement",
    "warp",
]
