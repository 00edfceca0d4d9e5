"""Lightning callbacks of stnlab."""

from stnlab.callbacks.bookkeeping import RunBookkeeping
from stnlab.callbacks.health import CollapseDetector
from stnlab.callbacks.transform_grid import TransformGridCallback, make_grid_image

__all__ = ["CollapseDetector", "RunBookkeeping", "TransformGridCallback", "make_grid_image"]
