"""Oracle transformers for pose-recovery tests: each knows the θ of every canvas it sees."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stnlab.geometry import (
    PoseRecord,
    ProjectiveTransform,
    TPSTransform,
    TransformFamily,
    apply_homography,
    pixel_matrix,
)
from stnlab.models import SpatialTransformer


class OracleLocNet(nn.Module):
    """Knows the θ of every canvas it will see: looks the input up among them."""

    def __init__(self, images: Tensor, thetas: Tensor) -> None:
        super().__init__()
        self.register_buffer("keys", images.flatten(1))
        self.register_buffer("thetas", thetas.float())
        self.out_features = thetas.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.thetas[torch.cdist(x.flatten(1), self.keys).argmin(dim=1)]


def oracle(
    family: TransformFamily, images: Tensor, thetas: Tensor, cls: type = SpatialTransformer, **kw
) -> SpatialTransformer:
    """A transformer whose θ for each known canvas is the given one."""
    transformer = cls(OracleLocNet(images, thetas), family, **kw)
    transformer.regressor.weight.data = torch.eye(thetas.shape[1])
    transformer.regressor.bias.data.zero_()
    return transformer


def undo(family: TransformFamily, record: PoseRecord, canvas: int) -> Tensor:
    """θ of ``family`` that shows every digit upright, filling the output canvas."""
    to_norm = torch.linalg.inv(pixel_matrix(canvas, dtype=torch.float64))
    # output (normalised) = the digit's normalised frame → input canvas (normalised)
    h = to_norm @ record.homography.double() @ pixel_matrix(28, dtype=torch.float64)
    if isinstance(family, TPSTransform):
        control = family.control.double().expand(len(h), -1, -1)
        return apply_homography(h, control).flatten(1)
    if isinstance(family, ProjectiveTransform):
        return (h / h[:, 2:, 2:]).flatten(1)[:, :8]
    return h[:, :2].flatten(1)
