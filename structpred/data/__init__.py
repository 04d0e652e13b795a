"""Data: the built-in shapes world, real data sets shipped in registry packages, and files on disk.

Items follow DESIGN.md §3: ``(image float32[3, H, W] in [0, 1], target dict)`` with
torchvision's keys; pairs ``(views float32[2, 3, H, W], target)`` and clips ``(frames
float32[T, 3, H, W], target)`` (:mod:`.shapes_views`), transformed jointly by :mod:`.transforms`.
Readers and writers of the field's formats are in :mod:`.formats`.
Optional readers (scikit-learn for digits, tifffile for nuclei) are imported only when used.
"""

from .collate import collate
from .datasets import DetectionFiles, from_coco, from_voc, from_yolo
from .digits import DigitCanvas, Digits
from .export import export_dataset, open_export
from .flow_real import FlowFrames, GrafFlow, StereoFlow
from .flow_warped import WarpedPhotoFlow
from .nuclei import Nuclei
from .records import Categories, ImageRecord
from .registry import build_dataset
from .shapes import ShapesSample, ShapesWorld
from .shapes_views import ShapesFlow, ShapesStereo, ShapesVideo
from .trees import DeepForestTrees

__all__ = [
    "Categories",
    "DeepForestTrees",
    "DetectionFiles",
    "DigitCanvas",
    "Digits",
    "FlowFrames",
    "GrafFlow",
    "ImageRecord",
    "Nuclei",
    "ShapesFlow",
    "ShapesSample",
    "ShapesStereo",
    "ShapesVideo",
    "ShapesWorld",
    "StereoFlow",
    "WarpedPhotoFlow",
    "build_dataset",
    "collate",
    "export_dataset",
    "from_coco",
    "from_voc",
    "from_yolo",
    "open_export",
]
