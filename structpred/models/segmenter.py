"""The semantic-segmentation contract shared by FCN, U-Net and DeepLab: images in, logits out.

A :class:`SemanticSegmenter` wraps a network ``net`` that maps a normalised batch
``[B, 3, H, W]`` to ``{"out": [B, K, H, W], "aux": [B, K, H, W] (optional)}`` logits at the
input's resolution (each net upsamples / crops / pads as its paper does). The wrapper validates
and normalises the images, stacks the targets' label maps, computes the loss and returns the
engine's pair ``(predictions, losses)`` (below).

Shape shorthand: B images, K classes (background included), H x W pixels.

Convention:
    * Images: a list of ``Tensor[3, H, W]`` floats in [0, 1], all the same size, or a
      ``Tensor[B, 3, H, W]`` (a segmentation network labels the pixels it is given; resize or
      crop to one size before batching).
    * Targets: dicts holding ``config.target_key`` (default ``"semantic"``), ``int64[H, W]``
      labels ``0..K-1`` or ``ignore_index`` (255).
    * Loss: per-pixel cross-entropy over non-ignored pixels (``loss_seg``), plus
      ``aux_weight`` x the same on ``"aux"`` (``loss_aux``) when the net returns it in training.
    * Predictions (the semantic-segmentation task's keys, the same in train and eval mode):
      ``logits`` float ``[B, K, H, W]`` (the network's scores), ``label_map`` int64 ``[B, H, W]``
      (the arg-max of the refined scores: :meth:`SemanticSegmenter.refine`, a dense CRF for
      DeepLab, identity otherwise), and ``aux_logits`` ``[B, K, H, W]`` when the net has an
      auxiliary head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.transform import IMAGENET_MEAN, IMAGENET_STD, as_image_list, check_image_batch
from .contract import check_request

IGNORE_INDEX = 255


@dataclasses.dataclass
class SegmenterConfig:
    """Settings every semantic segmenter has (models extend it with their own fields)."""

    num_classes: int = 21
    target_key: str = "semantic"
    ignore_index: int = IGNORE_INDEX
    aux_weight: float = 0.0
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD


def batch_images(images: Sequence[Tensor] | Tensor, where: str) -> Tensor:
    """Validated ``[B, 3, H, W]`` float batch of same-sized images from a list or a batch."""
    if isinstance(images, Tensor) and images.dim() == 4 and images.shape[0] > 0:
        return check_image_batch(images)  # one size by construction (and exportable: no split)
    image_list = as_image_list(images)
    sizes = {tuple(im.shape[-2:]) for im in image_list}
    if len(sizes) > 1:
        raise ValueError(
            f"{where}: images of different sizes {sorted(sizes)} in one batch; a segmentation "
            "network labels the pixels it is given, so resize or crop them to one size first"
        )
    return torch.stack(image_list) if isinstance(images, Sequence) else images


def stack_labels(
    targets: Sequence[dict[str, Tensor]], key: str, size: tuple[int, int], num_classes: int, ignore_index: int
) -> Tensor:
    """The targets' ``key`` label maps stacked to ``int64[B, H, W]``, each checked."""
    maps = []
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or key not in t:
            raise ValueError(f"targets[{i}] has no {key!r} label map (int64[H, W])")
        m = t[key]
        if not isinstance(m, Tensor) or m.dim() != 2 or m.is_floating_point() or m.dtype == torch.bool:
            desc = f"{m.dtype} {tuple(m.shape)}" if isinstance(m, Tensor) else type(m).__name__
            raise ValueError(f"targets[{i}][{key!r}] must be an integer Tensor[H, W], got {desc}")
        if tuple(m.shape) != size:
            raise ValueError(f"targets[{i}][{key!r}] is {tuple(m.shape)} but the image is {size}")
        bad = (m != ignore_index) & ((m < 0) | (m >= num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"targets[{i}][{key!r}] holds label {int(m[bad][0])}, outside 0..{num_classes - 1} "
                f"(ignore_index={ignore_index})"
            )
        maps.append(m.to(torch.int64))
    return torch.stack(maps)  # (B, H, W)


class SemanticSegmenter(nn.Module):
    """``model(images, targets=None, *, predict=True) -> (predictions, losses)``; see the module doc.

    Args:
        net: normalised ``[B, 3, H, W]`` -> ``{"out": [B, K, H, W], "aux"?: [B, K, H, W]}``.
        config: a :class:`SegmenterConfig` (or a subclass with the model's own fields).
    """

    image_mean: Tensor  # buffers (1, 3, 1, 1)
    image_std: Tensor

    def __init__(self, net: nn.Module, config: SegmenterConfig) -> None:
        super().__init__()
        if config.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {config.num_classes}")
        self.net = net
        self.config = config
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> normalised with the config's mean / std."""
        return (x - self.image_mean.to(x.dtype)) / self.image_std.to(x.dtype)

    def loss(
        self, outputs: dict[str, Tensor], labels: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Cross-entropy of ``outputs["out"]`` (and ``"aux"``) against ``labels int64[B, H, W]``.

        Subclasses override this for other losses (``targets`` carries any extra keys they need).
        """
        ignore = self.config.ignore_index
        losses = {"loss_seg": masked_cross_entropy(outputs["out"], labels, ignore)}
        if "aux" in outputs and self.config.aux_weight > 0:
            losses["loss_aux"] = self.config.aux_weight * masked_cross_entropy(outputs["aux"], labels, ignore)
        return losses

    def refine(self, logits: Tensor, images: Tensor) -> Tensor:
        """Scores the label map is read from, given the ``[0, 1]`` images (identity here)."""
        return logits

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor]]:
        """Scores and labels for every pixel (None with ``predict=False``), and the loss when
        ``targets`` are given; the same in train and eval mode."""
        name = type(self).__name__
        check_request(targets is not None, predict, name)
        x = batch_images(images, name)  # (B, 3, H, W)
        B, _, H, W = x.shape
        labels = None
        if targets is not None:  # checked before the (costly) forward pass
            if len(targets) != B:
                raise ValueError(f"{name}: {len(targets)} targets for {B} images")
            c = self.config
            labels = stack_labels(targets, c.target_key, (H, W), c.num_classes, c.ignore_index)
        outputs = self.net(self.normalize(x))
        out = outputs["out"]
        if out.shape[0] != B or out.shape[1] != self.config.num_classes or tuple(out.shape[-2:]) != (H, W):
            raise AssertionError(f"{name}.net returned {tuple(out.shape)} for input {tuple(x.shape)}")
        losses: dict[str, Tensor] = {}
        if labels is not None and targets is not None:
            losses = self.loss(outputs, labels.to(out.device), targets)
        if not predict:
            return None, losses
        # The label map comes from the refined scores (a CRF, for models that have one).
        predictions = {"logits": out, "label_map": self.refine(out, x).argmax(1)}  # (B, H, W)
        if "aux" in outputs:  # the auxiliary head's logits
            predictions["aux_logits"] = outputs["aux"]
        return predictions, losses


def masked_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over non-ignored pixels; 0 (with a graph) when every pixel is ignored."""
    if bool((labels != ignore_index).any()):
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
    return logits.sum() * 0.0


def config_from(cls: type[Any], overrides: dict[str, Any]) -> Any:
    """``cls(**overrides)``, with a ``ValueError`` naming unknown settings."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
    return cls(**overrides)
