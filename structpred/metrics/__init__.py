"""Evaluation metrics: COCO mAP for boxes and masks, mIoU for label maps.

Metrics accumulate over a dataset: ``update(...)`` per batch, ``compute()`` at the end,
``reset()`` to start again. Inputs follow torchvision's prediction / target dicts.
"""

from .detection import AREA_NAMES, COCOEvalResult, MeanAveragePrecision
from .segmentation import MeanIoU, SegmentationMetric, boundary_band

__all__ = [
    "AREA_NAMES",
    "COCOEvalResult",
    "MeanAveragePrecision",
    "MeanIoU",
    "SegmentationMetric",
    "boundary_band",
]
