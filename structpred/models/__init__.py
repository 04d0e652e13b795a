"""Models, one paper per file, built through the registry."""

from . import classifier  # noqa: F401  (registers its builders)
from .registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
