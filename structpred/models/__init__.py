"""Models, one paper per file, built through the registry."""

from . import classifier, fast_rcnn, faster_rcnn, sequence, stn  # noqa: F401  (register their builders)
from .registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
