"""Evaluation metrics: COCO mAP for boxes and masks, mIoU for label maps, depth and disparity errors,
MOT (CLEAR MOT, IDF1, HOTA) and OTB one-pass tracking scores.

Metrics accumulate over a dataset: ``update(...)`` per batch, ``compute()`` at the end,
``reset()`` to start again. Inputs follow torchvision's prediction / target dicts.
"""

from .depth import DEPTH_PRESETS, DepthMetric, DepthPreset, DisparityMetric, depth_metrics, disparity_metrics
from .detection import AREA_NAMES, COCOEvalResult, MeanAveragePrecision
from .mot import mot_metrics
from .ope import ope
from .segmentation import MeanIoU, SegmentationMetric, boundary_band

__all__ = [
    "AREA_NAMES",
    "COCOEvalResult",
    "DEPTH_PRESETS",
    "DepthMetric",
    "DepthPreset",
    "DisparityMetric",
    "MeanAveragePrecision",
    "MeanIoU",
    "SegmentationMetric",
    "boundary_band",
    "depth_metrics",
    "disparity_metrics",
    "mot_metrics",
    "ope",
]
