"""A small convolutional classifier: the single-value baseline, and the engine's test model.

Shape shorthand: B images, K classes, S input side (images are resized to S x S).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads.items import split_items
from .contract import check_request
from .registry import register_model


@dataclass
class ClassifierConfig:
    num_classes: int = 10
    width: int = 32
    input_size: int = 32
    dropout: float = 0.1
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # No batch norm: the model then behaves the same on one process and on many (DDP).
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))


def resized_batch(images: Sequence[Tensor] | Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    """List of ``[3, H, W]`` in [0, 1] (or ``[B, 3, H, W]``) -> ``[B, 3, S, S]`` resized to
    ``S = size`` (bilinear) and normalised by ``mean`` / ``std`` (``[1, 3, 1, 1]``)."""
    s = size
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        batch = images
        # Exported: always resize (an identity at S x S), so the program takes any size.
        if torch.compiler.is_exporting() or batch.shape[-2:] != (s, s):
            batch = F.interpolate(batch, size=(s, s), mode="bilinear", align_corners=False)
    else:
        if len(images) == 0:
            raise ValueError("images is an empty list")
        for i, im in enumerate(images):
            if im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"images[{i}] must be [3, H, W], got {tuple(im.shape)}")
        batch = torch.stack(
            [
                im
                if im.shape[-2:] == (s, s)
                else F.interpolate(im[None], size=(s, s), mode="bilinear", align_corners=False)[0]
                for im in images
            ]
        )  # (B, 3, S, S)
    return (batch - mean) / std


def classify(
    logits: Tensor, targets: Sequence[dict[str, Tensor]] | None, num_classes: int, predict: bool
) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
    """The classification contract from ``logits [B, K]``: per-image predictions
    ``{"class_logits", "scores", "labels"}`` and, with targets, ``{"loss_cls": cross-entropy}``."""
    losses: dict[str, Tensor] = {}
    if targets is not None:
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for {logits.shape[0]} images")
        true = torch.stack([t["labels"].reshape(()) for t in targets]).to(logits.device)
        if bool(((true < 0) | (true >= num_classes)).any()):
            raise ValueError(f"target labels must be in [0, {num_classes}), got {true.tolist()}")
        losses["loss_cls"] = F.cross_entropy(logits, true)
    if not predict:
        return None, losses
    scores, labels = logits.softmax(-1).max(-1)  # (B, K) -> (B,), (B,)
    return split_items({"class_logits": logits, "scores": scores, "labels": labels}), losses


class SmallClassifier(nn.Module):
    """Three conv blocks, global average pooling, dropout, a linear layer over K classes.

    ``forward(images, targets=None) -> (predictions, losses)``: per image
    ``{"class_logits": [K], "scores": max softmax prob, "labels": argmax}``; with targets
    (``{"labels": class}`` per image) ``losses = {"loss_cls": cross-entropy}``.
    """


    def __init__(self, config: ClassifierConfig | None = None, features: nn.Module | None = None) -> None:
        super().__init__()
        self.config = c = config or ClassifierConfig()
        self.features = features or nn.Sequential(
            _conv_block(3, c.width), _conv_block(c.width, 2 * c.width), _conv_block(2 * c.width, 4 * c.width)
        )
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(4 * c.width, c.num_classes)
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(c.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.std).view(1, 3, 1, 1), persistent=False)

    def _batch(self, images: Sequence[Tensor] | Tensor) -> Tensor:
        """List of ``[3, H, W]`` in [0, 1] (or ``[B, 3, H, W]``) -> normalised ``[B, 3, S, S]``."""
        return resized_batch(images, self.config.input_size, self.mean, self.std)

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        check_request(targets is not None, predict, type(self).__name__)
        x = self.features(self._batch(images))  # (B, 4w, S/8, S/8)
        logits = self.head(self.dropout(x.mean(dim=(2, 3))))  # (B, K)
        return classify(logits, targets, self.config.num_classes, predict)


@register_model(task="classification")
def digits_cnn(
    num_classes: int = 10, width: int = 32, input_size: int = 32, dropout: float = 0.1
) -> SmallClassifier:
    """Small CNN for 10-way digit classification (scikit-learn's real handwritten digits)."""
    return SmallClassifier(ClassifierConfig(num_classes, width, input_size, dropout))
