"""Annotation and label file formats: COCO json, Pascal VOC xml, YOLO txt, PNG label maps, .flo.

Readers return ``(list[ImageRecord], Categories)`` (or one record / one tensor) and raise
``ValueError`` naming the file and the problem; writers consume the same records.
"""

from .coco import check_segmentation, mask_to_rle, read_coco, segmentation_to_mask, write_coco
from .flo import read_flo, write_flo
from .labelmap import IGNORE_INDEX, read_label_map, voc_palette, write_label_map
from .voc import VOC_CLASSES, read_voc, read_voc_dir, write_voc
from .yolo import read_yolo, write_yolo

__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "check_segmentation",
    "mask_to_rle",
    "read_coco",
    "read_flo",
    "read_label_map",
    "read_voc",
    "read_voc_dir",
    "read_yolo",
    "segmentation_to_mask",
    "voc_palette",
    "write_coco",
    "write_flo",
    "write_label_map",
    "write_voc",
    "write_yolo",
]
