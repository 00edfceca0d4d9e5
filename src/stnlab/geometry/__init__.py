"""Differentiable geometry shared by the data (distortions) and the model (transformers).

A transform family turns a parameter vector θ of shape ``(B, P)`` into a sampling grid of
shape ``(B, H, W, 2)`` in normalised coordinates; :func:`sample` reads an image at that
grid. The same code warps clean digits into distorted ones and distorted inputs back.

Modules, bottom to top: ``grids`` (the coordinate convention, identity and 3×3-warp grids),
``fields`` (dense displacement grids), ``transforms`` (the families), ``sampler``
(reading images at a grid or a family's θ), ``pose``, ``boxes`` and ``window`` (points,
boxes and ink through a warp).

This package imports nothing else from stnlab and knows nothing of Lightning.
"""

from stnlab.geometry.boxes import box_iou, corners_box, output_box, output_quad
from stnlab.geometry.fields import displacement_grid, displacement_preimage, smooth_displacement
from stnlab.geometry.grids import ALIGN_CORNERS, base_grid, grid_coverage, matrix_grid
from stnlab.geometry.pose import (
    POSE_METRICS,
    PoseRecord,
    apply_homography,
    box_corners,
    circular_std,
    invert_points,
    map_points,
    pixel_matrix,
    pose_spread,
    pose_statistics,
    rotation_undone,
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
from stnlab.geometry.window import box_coverage, ink_kept, inside_quad, window_mask

__all__ = [
    "ALIGN_CORNERS",
    "FAMILIES",
    "POSE_METRICS",
    "AffineTransform",
    "AttentionTransform",
    "PoseRecord",
    "ProjectiveTransform",
    "SimilarityTransform",
    "TPSTransform",
    "TransformFamily",
    "TranslationTransform",
    "apply_homography",
    "base_grid",
    "box_corners",
    "box_coverage",
    "box_iou",
    "circular_std",
    "corners_box",
    "displacement_grid",
    "displacement_preimage",
    "grid_coverage",
    "homography_from_points",
    "ink_kept",
    "inside_quad",
    "invert_points",
    "make_family",
    "map_points",
    "matrix_grid",
    "output_box",
    "output_quad",
    "pixel_matrix",
    "placement_theta",
    "pose_spread",
    "pose_statistics",
    "rotation_undone",
    "sample",
    "similarity_fit",
    "smooth_displacement",
    "warp",
    "window_mask",
]
