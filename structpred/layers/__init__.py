"""Small reusable modules."""

from .poolers import MultiScaleRoIAlign

__all__ = ["MultiScaleRoIAlign"]
