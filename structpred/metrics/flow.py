"""Optical-flow metrics: end-point error and outlier rates over valid pixels, split by occlusion.

Shape shorthand: B pairs, H x W pixels.

The end-point error of a pixel is ``||pred - gt||_2`` in pixels. Over all valid pixels of all
pairs (pixel-weighted, as Sintel and KITTI report): ``epe`` (mean), ``px1`` / ``px3`` / ``px5``
(fraction with EPE <= 1, 3, 5 px) and ``fl_all`` (KITTI's outliers: EPE > 3 px *and* > 5 % of
the true flow's length); ``valid_pixels`` counts them.

Occlusion (optional target keys, bool ``[H, W]``): ``occluded`` is True where the frame0 pixel is
hidden or out of view in frame1 (its flow may still be known: ``valid``); ``noc`` is KITTI's
non-occluded mask (``occluded = ~noc``); ``occluded`` wins when both are given. Once any target
carried one, ``compute`` adds ``epe_noc`` / ``epe_occ`` (mean EPE over valid non-occluded /
occluded pixels), ``fl_noc`` / ``fl_occ`` (outlier rates there) and ``noc_pixels`` /
``occ_pixels``; a region without pixels gives NaN. Targets without either key count towards the
overall keys only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

OCCLUSION_KEYS = ("occluded", "noc")


def _mask(
    target: dict[str, Tensor], key: str, index: int, size: tuple[int, int], device: torch.device
) -> Tensor:
    value = target[key]
    if not isinstance(value, Tensor) or tuple(value.shape) != size:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"FlowMetric: targets[{index}]['{key}'] must be bool [H, W] = {size}, got {shape}")
    return value.to(device).bool()


class FlowMetric:
    """Accumulates end-point errors; ``update(preds, targets)``, ``compute()``, ``reset()``.

    ``preds``: ``{"flow": float[B, 2, H, W]}``; ``targets``: B dicts with ``flow`` float
    ``[2, H, W]`` and optionally ``valid`` bool ``[H, W]`` (all pixels when absent) and
    ``occluded`` or ``noc`` bool ``[H, W]`` (see the module docstring).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum_epe, self.count = 0.0, 0
        self.within = {1: 0, 3: 0, 5: 0}
        self.outliers = 0
        self.seen_occlusion = False
        # region -> [sum of EPE, pixels, outliers]
        self.regions: dict[str, list[float]] = {"noc": [0.0, 0, 0], "occ": [0.0, 0, 0]}

    def update(self, preds: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> None:
        if not isinstance(preds, dict) or not isinstance(preds.get("flow"), Tensor):
            raise ValueError("FlowMetric: preds must be a dict with 'flow' [B, 2, H, W]")
        flow = preds["flow"].detach().float()
        if flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[0] != len(targets):
            raise ValueError(
                f"FlowMetric: flow {tuple(flow.shape)} for {len(targets)} targets; need [B, 2, H, W]"
            )
        size = (int(flow.shape[2]), int(flow.shape[3]))
        for i, t in enumerate(targets):
            gt = t.get("flow")
            if not isinstance(gt, Tensor) or tuple(gt.shape) != tuple(flow.shape[1:]):
                raise ValueError(
                    f"FlowMetric: targets[{i}]['flow'] must be [2, H, W] = {tuple(flow.shape[1:])}"
                )
            gt = gt.to(flow)
            mask = torch.isfinite(gt).all(0)  # (H, W)
            if t.get("valid") is not None:
                mask &= _mask(t, "valid", i, size, flow.device)
            epe_map = (flow[i] - gt).norm(dim=0)  # (H, W)
            outlier_map = (epe_map > 3.0) & (epe_map > 0.05 * gt.norm(dim=0))  # (H, W)
            epe = epe_map[mask]  # (n,) over valid pixels
            self.sum_epe += float(epe.double().sum())
            self.count += int(epe.numel())
            for px in self.within:
                self.within[px] += int((epe <= px).sum())
            self.outliers += int(outlier_map[mask].sum())

            key = next((k for k in OCCLUSION_KEYS if t.get(k) is not None), None)
            if key is None:
                continue
            self.seen_occlusion = True
            occluded = _mask(t, key, i, size, flow.device)
            if key == "noc":
                occluded = ~occluded
            for region, where in (("noc", mask & ~occluded), ("occ", mask & occluded)):
                acc = self.regions[region]
                acc[0] += float(epe_map[where].double().sum())
                acc[1] += int(where.sum())
                acc[2] += int(outlier_map[where].sum())

    def compute(self) -> dict[str, Any]:
        n = max(self.count, 1)
        out: dict[str, Any] = {"epe": self.sum_epe / n}
        out.update({f"px{px}": c / n for px, c in self.within.items()})
        out["fl_all"] = self.outliers / n
        out["valid_pixels"] = self.count
        if self.seen_occlusion:
            for region, (total, pixels, outliers) in self.regions.items():
                out[f"epe_{region}"] = total / pixels if pixels else float("nan")
                out[f"fl_{region}"] = outliers / pixels if pixels else float("nan")
                out[f"{region}_pixels"] = int(pixels)
        return out
