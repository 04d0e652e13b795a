"""Backbones: one protocol, one registry (:mod:`structpred.backbones.registry`).

``forward_features(x) -> {name: map}`` finest first, ``out_channels`` and ``strides`` per map;
``get_backbone(name, output_stride=..., ...)`` builds any registered one:

* ``resnet18`` / ``resnet50``: ``c2`` .. ``c5`` (strides 4 .. 32), torchvision parameter names;
  ``output_stride`` 16 / 8 dilate the last stages (DeepLab).
* ``mobilenet_v3_large``: ``stage4`` / ``stage5`` (both stride 32; 16 dilated).
* ``vgg16``: ``pool3`` (8), ``pool4`` (16), ``c5`` = conv5_3 (16), ``pool5`` (32); ``VGG16Head`` = fc6/fc7;
  ``width_div`` / ``batch_norm`` / ``conv1_padding`` / ``ceil_mode`` for FCN's variants.
* ``csp_darknet``: YOLOv8's CSP-Darknet (C2f stages, SPPF), ``c2`` .. ``c5``, sizes n / s / m.
* ``narrow``: a small from-scratch net, ``c2`` .. ``c5`` (also dilated).
* :mod:`structpred.backbones.fpn`: any of them + an FPN (``fpn_backbone(name)``), and the
  torchvision-laid-out detection backbones (``resnet50_fpn`` ...).
"""

from . import swin, vit  # noqa: F401  (register their builders)
from .csp import CSPDarknet, csp_darknet
from .fpn import (
    BackboneWithFPN,
    fpn_backbone,
    mobilenet_v3_large_fpn,
    narrow_fpn,
    resnet18_fpn,
    resnet50_fpn,
)
from .mobilenet import MobileNetV3Features, MobileNetV3Large, mobilenet_v3_large
from .narrow import NarrowNet, narrow
from .registry import Backbone, check_backbone, get_backbone, list_backbones, register_backbone
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from .vgg import VGG16, VGG16Head, vgg16

__all__ = [
    "VGG16",
    "Backbone",
    "BackboneWithFPN",
    "BasicBlock",
    "CSPDarknet",
    "Bottleneck",
    "MobileNetV3Features",
    "MobileNetV3Large",
    "NarrowNet",
    "ResNet",
    "VGG16Head",
    "check_backbone",
    "csp_darknet",
    "fpn_backbone",
    "get_backbone",
    "list_backbones",
    "mobilenet_v3_large",
    "mobilenet_v3_large_fpn",
    "narrow",
    "narrow_fpn",
    "register_backbone",
    "resnet18",
    "resnet18_fpn",
    "resnet50",
    "resnet50_fpn",
    "vgg16",
]
