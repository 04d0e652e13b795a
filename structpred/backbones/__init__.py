"""Backbones with one API: ``forward_features(x) -> dict[str, Tensor]``, ``out_channels``, ``strides``.

* ``resnet18`` / ``resnet50``: ``c2`` .. ``c5`` (strides 4 .. 32), torchvision parameter names;
  ``replace_stride_with_dilation`` as torchvision's (DeepLab's output stride 8).
* ``mobilenet_v3_large``: ``stage4`` / ``stage5`` (both stride 32), as Faster R-CNN's FPN reads them.
* ``vgg16``: ``pool3`` (8), ``pool4`` (16), ``c5`` = conv5_3 (16), ``pool5`` (32); ``VGG16Head`` = fc6/fc7;
  ``width_div`` / ``batch_norm`` / ``conv1_padding`` / ``ceil_mode`` for FCN's variants.
* ``narrow``: a small from-scratch net, ``c2`` .. ``c5`` (also dilated, for DeepLab).
* FPN builders (``resnet50_fpn`` ...) live in ``structpred.layers.fpn``.
"""

from .mobilenet import MobileNetV3Features, MobileNetV3Large, mobilenet_v3_large
from .narrow import NarrowNet, narrow
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from .vgg import VGG16, VGG16Head, vgg16

__all__ = [
    "VGG16",
    "BasicBlock",
    "Bottleneck",
    "MobileNetV3Features",
    "MobileNetV3Large",
    "NarrowNet",
    "ResNet",
    "VGG16Head",
    "mobilenet_v3_large",
    "narrow",
    "resnet18",
    "resnet50",
    "vgg16",
]
