"""Assigning predictions to ground truth, and sampling a balanced training minibatch.

Used by the RPN (anchors vs boxes: 0.7 / 0.3, low-quality matches allowed) and by the
RoI heads (proposals vs boxes: 0.5 / 0.5) of Faster R-CNN; behaviour as torchvision's
``Matcher`` and ``BalancedPositiveNegativeSampler``. :class:`BackgroundFloorMatcher` adds
Fast R-CNN's background band (best IoU in ``[0.1, 0.5)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


class Matcher:
    """Match each prediction to its best ground truth by a quality matrix (IoU).

    Args:
        high_threshold: quality ``>=`` this is a match.
        low_threshold: quality ``< low`` -> ``-1`` (negative); ``[low, high)`` -> ``-2`` (ignored).
        allow_low_quality_matches: also match, to each ground truth, the predictions that
            reach its highest quality (ties included) even when below ``high_threshold``, so
            every ground truth gets at least one prediction.
    """

    BELOW_LOW_THRESHOLD = BELOW_LOW_THRESHOLD
    BETWEEN_THRESHOLDS = BETWEEN_THRESHOLDS

    def __init__(
        self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False
    ) -> None:
        if low_threshold > high_threshold:
            raise ValueError(
                f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """Match.

        Args:
            match_quality_matrix (Tensor[M, N]): quality of (ground truth m, prediction n).
        Returns:
            int64[N]: matched ground truth in ``[0, M)``, or -1 / -2 as above.
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"match_quality_matrix must be [M ground truths, N predictions], "
                f"got {tuple(match_quality_matrix.shape)}"
            )
        if match_quality_matrix.numel() == 0:
            if match_quality_matrix.shape[0] == 0:
                raise ValueError("No ground-truth boxes available for one of the images during training")
            raise ValueError("No proposal boxes available for one of the images during training")
        matched_vals, best_gt = match_quality_matrix.max(dim=0)  # (N,) best gt per prediction
        below = matched_vals < self.low_threshold
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches = best_gt.masked_fill(below, BELOW_LOW_THRESHOLD).masked_fill_(between, BETWEEN_THRESHOLDS)
        if self.allow_low_quality_matches:
            highest_per_gt = match_quality_matrix.max(dim=1).values  # (M,)
            # Predictions achieving some gt's highest quality (ties included) keep their best gt.
            preds = torch.where(match_quality_matrix == highest_per_gt[:, None])[1]
            matches[preds] = best_gt[preds]
        return matches


class BackgroundFloorMatcher(Matcher):
    """RoIHeads' matcher with the paper's background band: best IoU in ``[floor, low)`` is
    background (-1), below ``floor`` ignored (-2, never sampled), ``>= high`` a match."""

    def __init__(self, high_threshold: float, low_threshold: float, floor: float) -> None:
        super().__init__(high_threshold, low_threshold, allow_low_quality_matches=False)
        if not 0.0 <= floor <= low_threshold:
            raise ValueError(f"bg_iou_floor must be in [0, bg_iou_thresh={low_threshold}], got {floor}")
        self.floor = floor

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """``(M gts, N proposals)`` IoUs -> int64[N]: gt index, -1 background or -2 ignored."""
        matches = super().__call__(match_quality_matrix)
        best = match_quality_matrix.max(dim=0).values  # (N,)
        matches[best < self.floor] = BETWEEN_THRESHOLDS
        return matches


class BalancedPositiveNegativeSampler:
    """Sample up to ``batch_size_per_image`` predictions per image, ``positive_fraction`` positive.

    Labels: ``>= 1`` positive, ``0`` negative, ``-1`` ignored. When there are too few
    positives, negatives fill the batch. Draws ``randperm(positives)`` then
    ``randperm(negatives)`` per image, as torchvision does, so with the same seed the same
    samples come out.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image <= 0:
            raise ValueError(f"batch_size_per_image must be positive, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def sample_indices(
        self, matched_idxs: list[Tensor], generator: torch.Generator | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Per image, the sampled positives and negatives as sorted int64 indices into ``[N_i]``.

        The same draws as :meth:`__call__` (whose masks are these indices scattered).
        """
        out = []
        for labels in matched_idxs:
            positive = torch.where(labels >= 1)[0]
            negative = torch.where(labels == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            perm_pos = torch.randperm(positive.numel(), device=positive.device, generator=generator)
            perm_neg = torch.randperm(negative.numel(), device=negative.device, generator=generator)
            pos = positive[perm_pos[:num_pos].sort().values]  # positive is sorted: so is pos
            neg = negative[perm_neg[:num_neg].sort().values]
            out.append((pos, neg))
        return out

    def __call__(
        self, matched_idxs: list[Tensor], generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Sample.

        Args:
            matched_idxs: per image, int ``[N_i]`` labels as above.
            generator: optional RNG for reproducible sampling.
        Returns:
            (pos, neg): per image, uint8 masks ``[N_i]`` of the sampled positives / negatives.
        """
        pos_masks, neg_masks = [], []
        samples = self.sample_indices(matched_idxs, generator)
        for labels, (pos, neg) in zip(matched_idxs, samples, strict=True):
            pos_masks.append(torch.zeros_like(labels, dtype=torch.uint8).index_fill_(0, pos, 1))
            neg_masks.append(torch.zeros_like(labels, dtype=torch.uint8).index_fill_(0, neg, 1))
        return pos_masks, neg_masks
