"""Lightning callbacks of stnlab."""

from stnlab.callbacks.transform_grid import TransformGridCallback, make_grid_image

__all__ = ["TransformGridCallback", "make_grid_image"]
