"""Models, one paper per file, built through the registry."""

from . import classifier, deeplab, fast_rcnn, faster_rcnn, fcn, mask_rcnn, sequence, stn, unet  # noqa: F401  (register their builders)
from .registry import get_model, list_models, register_model
from .weights import from_torchvision

__all__ = ["from_torchvision", "get_model", "list_models", "register_model"]
