"""Lightning callbacks of stnlab."""

from stnlab.callbacks.bookkeeping import RunBookkeeping
from stnlab.callbacks.health import CollapseDetector, NonFiniteLossGuard
from stnlab.callbacks.transform_grid import TransformGridCallback

__all__ = [
    "CollapseDetector",
    "NonFiniteLossGuard",
    "RunBookkeeping",
    "TransformGridCallback",
]
