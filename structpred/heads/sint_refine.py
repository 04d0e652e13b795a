"""SINT+'s box refinement (Tao, Gavves, Smeulders, CVPR 2016, after R-CNN, Girshick et al. 2014):
ridge regressors from a candidate's pooled features to the R-CNN deltas that take it to the
true box, trained on the **first frame only** and never updated.

Shape shorthand: N training boxes, K boxes to refine, D feature size.

* Training samples: boxes jittered around the first-frame target (centre shift up to +-0.3 x its
  size, sides scaled by up to x/÷1.3), kept when their IoU with it is >= ``min_iou`` (0.6, R-CNN's
  threshold), the target itself included (:func:`refine_samples`).
* Targets: R-CNN's ``(dx, dy, dw, dh)`` of the true box against each sample
  (:func:`structpred.ops.box_coder.encode_boxes`, weights 1): centre offsets in units of the
  sample's size, log size ratios.
* Regressors: four ridge regressions with an unpenalised intercept, closed form
  (:func:`ridge_regression`): ``W = (Xc^T Xc + lam I)^-1 Xc^T Yc`` on centred ``X`` and ``Y``,
  ``b = mean(Y) - mean(X) W``, solved in float64 with ``torch.linalg.solve``.
* Applying (:meth:`BoxRegressor.apply`): deltas predicted for a box are clamped to the range seen
  in training (a ridge model extrapolates badly) and decoded on the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops.box_coder import decode_boxes, encode_boxes
from .sint_loss import sample_candidates

__all__ = ["BoxRegressor", "fit_box_regressor", "refine_samples", "ridge_regression"]


def ridge_regression(x: Tensor, y: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Ridge regression with an unpenalised intercept, closed form.

    Args:
        x (Tensor[N, D]): features; y (Tensor[N, J]): targets; lam: the ridge weight (> 0).
    Returns:
        (weight float64[D, J], bias float64[J]): ``y ~ x @ weight + bias`` minimising
        ``||y - x W - b||^2 + lam ||W||^2``.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            "ridge_regression: x must be [N, D] and y [N, J] with N > 0, "
            f"got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"ridge_regression: lam must be a finite number > 0, got {lam}")
    if not bool(torch.isfinite(x).all() & torch.isfinite(y).all()):
        raise ValueError("ridge_regression: x or y contains NaN or infinite values")
    x64, y64 = x.double(), y.double()
    x_mean, y_mean = x64.mean(0), y64.mean(0)  # (D,), (J,)
    xc, yc = x64 - x_mean, y64 - y_mean  # (N, D), (N, J)
    D = x.shape[1]
    gram = xc.T @ xc + lam * torch.eye(D, dtype=torch.float64)  # (D, D), positive definite
    weight = torch.linalg.solve(gram, xc.T @ yc)  # (D, J)
    return weight, y_mean - x_mean @ weight


def refine_samples(
    box: Tensor,
    num: int,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
    *,
    min_iou: float = 0.6,
    max_shift: float = 0.3,
    max_log_scale: float = math.log(1.3),
) -> Tensor:
    """Training boxes for the regressors: ``box`` (``[4]`` xyxy, the first-frame target) and up to
    ``num`` boxes jittered around it with IoU >= ``min_iou``, clipped to ``image_size`` (H, W).
    Returns ``float[N, 4]`` (the target first)."""
    if not 0 < min_iou < 1:
        raise ValueError(f"refine_samples: min_iou must lie in (0, 1), got {min_iou}")
    boxes, pos = sample_candidates(
        box, num, image_size, generator, max_shift=max_shift, max_log_scale=max_log_scale,
        pos_iou=min_iou, neg_iou=0.0,
    )  # fmt: skip
    return boxes[pos]


@dataclass
class BoxRegressor:
    """Four ridge regressors (dx, dy, dw, dh) from features ``[D]`` of a box, with the range of
    the training deltas (``low``, ``high``: ``[4]``) that predictions are clamped to."""

    weight: Tensor  # (D, 4) float64
    bias: Tensor  # (4,)
    low: Tensor  # (4,)
    high: Tensor  # (4,)

    def deltas(self, features: Tensor) -> Tensor:
        """features ``[K, D]`` -> clamped R-CNN deltas ``float[K, 4]``."""
        if features.dim() != 2 or features.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"BoxRegressor: features must be [K, {self.weight.shape[0]}], got {tuple(features.shape)}"
            )
        d = features.double() @ self.weight + self.bias  # (K, 4)
        return torch.maximum(torch.minimum(d, self.high), self.low).to(features.dtype)

    def apply(self, features: Tensor, boxes: Tensor) -> Tensor:
        """Refined boxes ``float[K, 4]`` xyxy: ``boxes`` ``[K, 4]`` moved by the deltas predicted from
        their ``features`` ``[K, D]`` (not clipped to the image)."""
        if boxes.dim() != 2 or boxes.shape != (features.shape[0], 4):
            raise ValueError(
                f"BoxRegressor: boxes must be [{features.shape[0]}, 4], got {tuple(boxes.shape)}"
            )
        return decode_boxes(self.deltas(features).to(boxes.dtype), boxes)


def fit_box_regressor(features: Tensor, boxes: Tensor, target: Tensor, lam: float) -> BoxRegressor:
    """Fit the regressors on one frame.

    Args:
        features (Tensor[N, D]): the pooled features of ``boxes``.
        boxes (Tensor[N, 4]): training boxes (xyxy px) around ``target``.
        target (Tensor[4]): the true box (xyxy px), at least 1 px wide and high.
        lam: ridge weight (> 0).
    """
    if target.shape != (4,) or not bool(torch.isfinite(target).all()):
        raise ValueError(f"fit_box_regressor: target must be a finite xyxy [4], got {target.tolist()}")
    if float(target[2] - target[0]) < 1 or float(target[3] - target[1]) < 1:
        raise ValueError(
            f"fit_box_regressor: the first-frame box {target.tolist()} is degenerate (a side < 1 px)"
        )
    if boxes.dim() != 2 or boxes.shape != (features.shape[0], 4) or boxes.shape[0] < 4:
        raise ValueError(
            f"fit_box_regressor: need at least 4 training boxes [N, 4] beside features [N, D], "
            f"got {tuple(boxes.shape)} and {tuple(features.shape)}"
        )
    if bool(((boxes[:, 2:] - boxes[:, :2]) <= 0).any()):
        raise ValueError("fit_box_regressor: a training box has zero width or height")
    y = encode_boxes(target[None].expand_as(boxes).to(boxes), boxes)  # (N, 4): dx, dy, dw, dh
    weight, bias = ridge_regression(features, y, lam)
    y64 = y.double()
    return BoxRegressor(weight, bias, y64.min(0).values, y64.max(0).values)
