"""Models, one paper per file, built through the registry."""

from . import classifier, deeplab, fast_rcnn, faster_rcnn, fcn, mask_rcnn, sequence, stn, unet  # noqa: F401  (register their builders)
from .registry import ModelInfo, get_model, list_models, model_info, register_model
from .weights import from_torchvision

__all__ = ["ModelInfo", "from_torchvision", "get_model", "list_models", "model_info", "register_model"]
