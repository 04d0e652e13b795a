"""Optical-flow metrics: end-point error and outlier rates over valid pixels.

Shape shorthand: B pairs, H x W pixels.

The end-point error of a pixel is ``||pred - gt||_2`` in pixels. Over all valid pixels of all
pairs (pixel-weighted, as Sintel and KITTI report): ``epe`` (mean), ``px1`` / ``px3`` / ``px5``
(fraction with EPE <= 1, 3, 5 px) and ``fl_all`` (KITTI's outliers: EPE > 3 px *and* > 5 % of
the true flow's length).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class FlowMetric:
    """Accumulates end-point errors; ``update(preds, targets)``, ``compute()``, ``reset()``.

    ``preds``: ``{"flow": float[B, 2, H, W]}``; ``targets``: B dicts with ``flow`` float
    ``[2, H, W]`` and optionally ``valid`` bool ``[H, W]`` (all pixels when absent).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum_epe, self.count = 0.0, 0
        self.within = {1: 0, 3: 0, 5: 0}
        self.outliers = 0

    def update(self, preds: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> None:
        if not isinstance(preds, dict) or not isinstance(preds.get("flow"), Tensor):
            raise ValueError("FlowMetric: preds must be a dict with 'flow' [B, 2, H, W]")
        flow = preds["flow"].detach().float()
        if flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[0] != len(targets):
            raise ValueError(
                f"FlowMetric: flow {tuple(flow.shape)} for {len(targets)} targets; need [B, 2, H, W]"
            )
        for i, t in enumerate(targets):
            gt = t.get("flow")
            if not isinstance(gt, Tensor) or tuple(gt.shape) != tuple(flow.shape[1:]):
                size = tuple(flow.shape[1:])
                raise ValueError(f"FlowMetric: targets[{i}]['flow'] must be [2, H, W] = {size}")
            gt = gt.to(flow)
            valid = t.get("valid")
            mask = torch.isfinite(gt).all(0)  # (H, W)
            if valid is not None:
                mask &= valid.bool().to(flow.device)
            epe = (flow[i] - gt).norm(dim=0)[mask]  # (n,) over valid pixels
            length = gt.norm(dim=0)[mask]
            self.sum_epe += float(epe.double().sum())
            self.count += int(epe.numel())
            for px in self.within:
                self.within[px] += int((epe <= px).sum())
            self.outliers += int(((epe > 3.0) & (epe > 0.05 * length)).sum())

    def compute(self) -> dict[str, Any]:
        n = max(self.count, 1)
        out: dict[str, Any] = {"epe": self.sum_epe / n}
        out.update({f"px{px}": c / n for px, c in self.within.items()})
        out["fl_all"] = self.outliers / n
        out["valid_pixels"] = self.count
        return out
