"""Lightning callbacks of stnlab."""

from stnlab.callbacks.bookkeeping import RunBookkeeping
from stnlab.callbacks.error_analysis import ErrorAnalysisCallback
from stnlab.callbacks.health import CollapseDetector, NonFiniteLossGuard
from stnlab.callbacks.learning_rates import LearningRates
from stnlab.callbacks.pose import PoseRecoveryCallback
from stnlab.callbacks.transform_grid import TransformGridCallback

__all__ = [
    "CollapseDetector",
    "ErrorAnalysisCallback",
    "LearningRates",
    "NonFiniteLossGuard",
    "PoseRecoveryCallback",
    "RunBookkeeping",
    "TransformGridCallback",
]
