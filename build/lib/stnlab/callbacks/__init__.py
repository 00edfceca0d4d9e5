"""Lightning callbacks of stnlab."""

from stnlab.callbacks.bookkeeping import RunBookkeeping
from stnlab.callbacks.health import CollapseDetector, NonFiniteLossGuard
from stnlab.callbacks.pose import PoseRecoveryCallback, measure_pose
from stnlab.callbacks.transform_grid import TransformGridCallback

__all__ = [
    "CollapseDetector",
    "NonFiniteLossGuard",
    "PoseRecoveryCallback",
    "RunBookkeeping",
    "TransformGridCallback",
    "measure_pose",
]
