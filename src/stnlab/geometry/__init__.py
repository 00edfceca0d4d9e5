"""Differentiable geometry shared by the data (distortions) and the model (transformers).

A transform family turns a parameter vector θ of shape ``(B, P)`` into a sampling grid of
shape ``(B, H, W, 2)`` in normalised coordinates; :func:`sample` reads an image at that
grid. The same code warps clean digits into distorted ones and distorted inputs back.

Modules, bottom to top: ``grids`` (the coordinate convention, identity and 3×3-warp grids),
``fields`` (dense displacement grids), ``transforms`` (the families), ``sampler``
(reading images at a grid or a family's θ).

This package imports nothing else from stnlab and knows nothing of Lightning.
"""

from stnlab.geometry.fields import displacement_grid, smooth_displacement
from stnlab.geometry.grids import ALIGN_CORNERS, base_grid, grid_coverage, matrix_grid
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
    "AffineTransform",
    "AttentionTransform",
    "ProjectiveTransform",
    "SimilarityTransform",
    "TPSTransform",
    "TransformFamily",
    "TranslationTransform",
    "base_grid",
    "displacement_grid",
    "grid_coverage",
    "homography_from_points",
    "make_family",
    "matrix_grid",
    "placement_theta",
    "sample",
    "smooth_displacement",
    "warp",
]
