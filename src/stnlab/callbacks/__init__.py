"""Lightning callbacks of stnlab."""

from stnlab.callbacks.bookkeeping import RunBookkeeping
from stnlab.callbacks.health import CollapseDetector, NonFiniteLossGuard
from stnlab.callbacks.transform_grid import TransformGridCallback, make_grid_image

__all__ = [
    "CollapseDetector",
    "NonFiniteLossGuard",
    "RunBookkeeping",
    "TransformGridCallback",
    "make_grid_image",
]
