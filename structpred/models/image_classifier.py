"""An image classifier over any backbone that offers a pooled embedding (ViT, Swin, ...).

``backbone.embed(x [B, 3, S, S]) -> [B, D]`` (``backbone.embed_dim == D``) is the image's
embedding as the backbone's own classifier sees it (ViT: the final-normed class token; Swin: the
mean over positions of its final-normed last stage); this model adds dropout and one linear layer
``head`` over K classes, resizes and normalises the input like :class:`SmallClassifier`, and keeps
the classification contract (:func:`~structpred.models.classifier.classify`).

State dict: ``backbone.*`` + ``head.weight`` / ``head.bias`` (timm's classifier head is ``head``
too). Shape shorthand: B images, D embedding width, K classes, S input side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .classifier import classify, resized_batch
from .contract import check_request

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageClassifierConfig:
    num_classes: int = 1000
    input_size: int = 224  # images are resized to S x S
    dropout: float = 0.0  # before the head (timm's ``drop_rate``)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class ImageClassifier(nn.Module):
    """``backbone.embed`` -> dropout -> ``head`` (Linear D -> K).

    ``forward(images, targets=None) -> (predictions, losses)`` as :class:`SmallClassifier`;
    :meth:`logits` takes an already normalised ``[B, 3, H, W]`` batch (what timm's and torchvision's
    ``forward`` take) and returns ``[B, K]``.
    """

    class_dependent_tensors: tuple[str, ...] = (r"head\.(?:weight|bias)",)

    def __init__(self, backbone: nn.Module, config: ImageClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ImageClassifierConfig()
        if not callable(getattr(backbone, "embed", None)) or not isinstance(
            getattr(backbone, "embed_dim", None), int
        ):
            raise ValueError(
                f"{type(backbone).__name__} has no embed(x) / embed_dim: it cannot feed a classifier"
            )
        if c.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {c.num_classes}")
        self.num_classes = c.num_classes
        self.backbone = backbone
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(int(backbone.embed_dim), c.num_classes)  # type: ignore[arg-type]
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(c.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.std).view(1, 3, 1, 1), persistent=False)

    def logits(self, x: Tensor) -> Tensor:
        """Normalised ``[B, 3, H, W]`` -> class logits ``[B, K]``."""
        embedding: Tensor = self.backbone.embed(x)  # type: ignore[operator]  # (B, D)
        return self.head(self.dropout(embedding))  # (B, K)

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        check_request(targets is not None, predict, type(self).__name__)
        batch = resized_batch(images, self.config.input_size, self.mean, self.std)  # (B, 3, S, S)
        return classify(self.logits(batch), targets, self.num_classes, predict)
