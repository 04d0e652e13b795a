"""Which tensors of each model family depend on the number of classes.

Fine-tuning to another class count keeps everything else (backbone, FPN, RPN, box head, ...)
and re-initialises only these: box predictor (``cls_score`` ``[K + 1, R]``, ``bbox_pred``
``[4 (K + 1), R]``), the mask predictor's last conv, a segmenter's classifier conv(s) and
class-to-class upsamplers, a classifier's last linear layer. Each family declares its tensors by
patterns on their full ``state_dict`` names (``re.fullmatch``): a model class declares its own in a
class attribute ``class_dependent_tensors`` (new families do, in their own file), or the table
below names them for the older families; the first family the model is an instance of wins, so
subclasses come before their bases. A wrapper declares a property instead (``VideoDetector``: its
detector's, under ``detector.``). ``tests/models/test_finetune.py``
checks, for every registered model, that the declared tensors are exactly those whose shape
changes between ``num_classes=3`` and ``num_classes=5``.
"""

from __future__ import annotations

import re

from torch import nn

from ..classifier import SmallClassifier
from ..deeplab import AtrousSegmenter
from ..fast_rcnn import FastRCNN
from ..faster_rcnn import FasterRCNN
from ..mask_rcnn import MaskRCNN
from ..segmenter import SemanticSegmenter
from ..sequence import CharLM, SequenceClassifier, SequenceRegressor
from ..unet import UNetSegmenter

_BOX_PREDICTOR = r"roi_heads\.box_predictor\.(?:cls_score|bbox_pred)\.(?:weight|bias)"

# (model family, patterns of its class-dependent tensors); subclasses before their bases.
CLASS_DEPENDENT: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (MaskRCNN, (_BOX_PREDICTOR, r"roi_heads\.mask_predictor\.mask_fcn_logits\.(?:weight|bias)")),
    (FasterRCNN, (_BOX_PREDICTOR,)),
    (FastRCNN, (_BOX_PREDICTOR,)),
    (AtrousSegmenter, (r"net\.(?:aux_)?head\.classifier\.(?:weight|bias)",)),
    (UNetSegmenter, (r"net\.head\.(?:weight|bias)",)),
    # FCN-32s/16s/8s: the score layers and the class-to-class bilinear upsamplers.
    (SemanticSegmenter, (r"net\.score_(?:fr|pool3|pool4)\.(?:weight|bias)", r"net\.upscore\w*\.weight")),
    (SmallClassifier, (r"head\.(?:weight|bias)",)),  # STNClassifier too
    (SequenceClassifier, (r"head\.fc\.(?:weight|bias)",)),
    (SequenceRegressor, ()),  # no classes
    (CharLM, ()),  # the vocabulary is the output, not a class count
)

__all__ = ["CLASS_DEPENDENT", "class_dependent_names", "class_dependent_patterns"]


def class_dependent_patterns(model: nn.Module) -> tuple[str, ...]:
    """The declared class-dependent name patterns of ``model``'s family.

    Raises:
        ValueError: ``model``'s type is in no declared family.
    """
    declared = getattr(model, "class_dependent_tensors", None)  # a class attribute or a property
    if declared is not None:
        return tuple(declared)
    for family, patterns in CLASS_DEPENDENT:
        if isinstance(model, family):
            return patterns
    known = ", ".join(f.__name__ for f, _ in CLASS_DEPENDENT)
    raise ValueError(
        f"{type(model).__name__}: no class-dependent tensors declared for this model family "
        f"(structpred.models.weights.class_dependent knows {known}; a new family declares a "
        "class attribute class_dependent_tensors)"
    )


def class_dependent_names(model: nn.Module) -> list[str]:
    """Names in ``model.state_dict()`` whose shape depends on the number of classes."""
    compiled = [re.compile(p) for p in class_dependent_patterns(model)]
    return [name for name in model.state_dict() if any(p.fullmatch(name) for p in compiled)]
