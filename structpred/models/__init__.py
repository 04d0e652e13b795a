"""Models, one paper per file, built through the registry."""

from . import (  # noqa: F401  (register their builders)
    classifier,
    deeplab,
    fast_rcnn,
    faster_rcnn,
    fcn,
    fcos,
    image_classifier,
    keypoint_rcnn,
    mask_rcnn,
    monodepth,
    multitask,
    pwc_net,
    raft,
    retinanet,
    sequence,
    sint,
    stereo_net,
    stn,
    swin,
    unet,
    video_detector,
    vit,
    yolo,
    yolo_v1,
)
from .registry import ModelInfo, get_model, list_models, model_info, register_model
from .weights import from_timm, from_torchvision

__all__ = [
    "ModelInfo",
    "from_timm",
    "from_torchvision",
    "get_model",
    "list_models",
    "model_info",
    "register_model",
]
