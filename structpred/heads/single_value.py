"""Single-value heads: N-way classification, regression and pairwise ranking.

The baseline every structured head is compared to: one value (a class, a number, a score) per
image, read off a backbone's pooled features. Each head is a linear layer over ``[B, D]``
features (a ``[B, C, H, W]`` map is global-pooled first, see :func:`global_pool`) with its loss
next to it; the ``losses`` methods return ``loss_*`` dicts the engine sums.

Shape shorthand:
    B: images (or pairs), D: pooled feature size, C, H, W: a feature map,
    K: classes, O: regression outputs per image.

Ranking ("who is older?", "which digit is larger?"): the head gives a scalar score ``f(x)`` per
image and a pair ``(a, b)`` with target ``y = +1`` (a ranks higher) or ``-1`` is penalised by
``max(0, -y (f(a) - f(b)) + margin)``, the margin ranking loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .items import split_items

POOLS = ("avg", "max")
REGRESSION_LOSSES = ("mse", "smooth_l1")


def global_pool(features: Tensor, mode: str = "avg") -> Tensor:
    """``[B, C, H, W]`` feature map -> ``[B, C]`` by global average or max; ``[B, D]`` is returned as is."""
    if mode not in POOLS:
        raise ValueError(f"mode must be one of {POOLS}, got {mode!r}")
    if not isinstance(features, Tensor) or features.dim() not in (2, 4):
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a Tensor[B, D] or [B, C, H, W], got {got}")
    if features.dim() == 2:
        return features
    return features.mean(dim=(2, 3)) if mode == "avg" else features.amax(dim=(2, 3))  # (B, C, H, W) -> (B, C)


def _features(features: Tensor, in_features: int, head: str) -> Tensor:
    """Pool if needed and check the feature size: ``-> [B, D]``."""
    pooled = global_pool(features)
    if pooled.shape[1] != in_features:
        raise ValueError(f"{head} expects {in_features} features per image, got {tuple(features.shape)}")
    return pooled


def _batch_size_check(got: int, want: int, what: str) -> None:
    if got != want:
        raise ValueError(f"{got} {what} for {want} predictions")


class ClassificationHead(nn.Module):
    """Dropout + linear layer: ``[B, D]`` (or a ``[B, C, H, W]`` map, pooled) -> logits ``[B, K]``."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1:
            raise ValueError(f"in_features and num_classes must be >= 1, got {in_features}, {num_classes}")
        self.in_features, self.num_classes = in_features, num_classes
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``[B, K]``."""
        return self.fc(self.dropout(_features(features, self.in_features, "ClassificationHead")))

    @staticmethod
    def predictions(logits: Tensor) -> list[dict[str, Tensor]]:
        """Per item ``{"class_logits": [K], "scores": max softmax probability, "labels": argmax}``."""
        scores, labels = logits.softmax(-1).max(-1)  # (B,), (B,)
        return split_items({"class_logits": logits, "scores": scores, "labels": labels})

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of ``logits [B, K]`` against class indices ``labels int64[B]``."""
        if labels.shape != logits.shape[:1] or labels.is_floating_point():
            raise ValueError(
                f"labels must be int64[{logits.shape[0]}], got {labels.dtype} {tuple(labels.shape)}"
            )
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(f"target labels must be in [0, {self.num_classes}), got {labels.tolist()}")
        return F.cross_entropy(logits, labels.to(torch.int64))

    def losses(self, logits: Tensor, targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``{"loss_cls": cross-entropy}`` against per-image targets ``{"labels": class}``."""
        _batch_size_check(len(targets), logits.shape[0], "targets")
        labels = torch.stack([t["labels"].reshape(()) for t in targets]).to(logits.device)  # (B,)
        return {"loss_cls": self.loss(logits, labels)}


class RegressionHead(nn.Module):
    """Linear layer ``[B, D] -> [B, O]`` with an MSE or smooth-L1 loss."""

    def __init__(self, in_features: int, out_dims: int = 1, loss: str = "mse", beta: float = 1.0) -> None:
        super().__init__()
        if in_features < 1 or out_dims < 1:
            raise ValueError(f"in_features and out_dims must be >= 1, got {in_features}, {out_dims}")
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
        if beta <= 0:
            raise ValueError(f"beta (smooth-L1's quadratic zone) must be > 0, got {beta}")
        self.in_features, self.out_dims, self.loss_type, self.beta = in_features, out_dims, loss, beta
        self.fc = nn.Linear(in_features, out_dims)

    def forward(self, features: Tensor) -> Tensor:
        """Predictions ``[B, O]``."""
        return self.fc(_features(features, self.in_features, "RegressionHead"))

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean loss of ``pred [B, O]`` against ``target [B, O]`` (``[B]`` when ``O == 1``)."""
        if target.dim() == 1 and self.out_dims == 1:
            target = target.unsqueeze(1)  # (B,) -> (B, 1)
        if target.shape != pred.shape:
            raise ValueError(f"target must have shape {tuple(pred.shape)}, got {tuple(target.shape)}")
        target = target.to(pred.dtype)
        if self.loss_type == "mse":
            return F.mse_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=self.beta)

    def losses(
        self, pred: Tensor, targets: Sequence[dict[str, Tensor]], key: str = "value"
    ) -> dict[str, Tensor]:
        """``{"loss_reg": ...}`` against per-image targets ``{key: Tensor[O]}``."""
        _batch_size_check(len(targets), pred.shape[0], "targets")
        target = torch.stack([t[key].reshape(self.out_dims) for t in targets]).to(pred.device)  # (B, O)
        return {"loss_reg": self.loss(pred, target)}


def pairwise_ranking_loss(
    score_a: Tensor, score_b: Tensor, target: Tensor, margin: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """Margin ranking loss ``max(0, -target * (score_a - score_b) + margin)``.

    Args:
        score_a, score_b (Tensor[B]): scores of the two items of each pair.
        target (Tensor[B]): ``+1`` where ``a`` should rank higher, ``-1`` where ``b`` should.
        margin: how far apart the scores must be before a pair costs nothing.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per pair ``[B]``).
    """
    if score_a.shape != score_b.shape or target.shape != score_a.shape:
        raise ValueError(
            f"score_a, score_b and target must have the same shape, got "
            f"{tuple(score_a.shape)}, {tuple(score_b.shape)}, {tuple(target.shape)}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if bool(((target != 1) & (target != -1)).any()):
        raise ValueError(f"target must hold only +1 and -1, got {target.unique().tolist()}")
    per_pair = (margin - target.to(score_a.dtype) * (score_a - score_b)).clamp(min=0)  # (B,)
    if reduction == "none":
        return per_pair
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


class RankingHead(nn.Module):
    """Linear layer ``[B, D] -> [B]``: one score per image; pairs are ranked by their scores."""

    def __init__(self, in_features: int, margin: float = 1.0) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        self.in_features, self.margin = in_features, margin
        self.fc = nn.Linear(in_features, 1)

    def forward(self, features: Tensor) -> Tensor:
        """Scores ``[B]``."""
        return self.fc(_features(features, self.in_features, "RankingHead")).squeeze(1)  # (B, 1) -> (B,)

    def loss(self, score_a: Tensor, score_b: Tensor, target: Tensor) -> Tensor:
        """:func:`pairwise_ranking_loss` with this head's margin."""
        return pairwise_ranking_loss(score_a, score_b, target, self.margin)

    def losses(self, score_a: Tensor, score_b: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``{"loss_rank": ...}`` for pairs ``(a, b)`` with targets ``±1``."""
        return {"loss_rank": self.loss(score_a, score_b, target)}
