"""Sequence metrics: bits per character for language models, RMSE / MAE for regression.

Both follow the engine's Metric protocol: ``update(preds, targets)`` per batch (lists of per-item
dicts), ``compute()`` at the end, ``reset()`` to start again.

Shape shorthand: T steps of an item, V vocabulary size, O regression outputs of an item.

Convention: bits per character = (summed next-character negative log-likelihood in nats) / ln 2
/ (characters scored); targets equal to ``ignore_index`` are not scored. Regression errors are
reported in the data's units: values are multiplied by ``scale`` first (a standardised target's
std), so ``rmse = scale * sqrt(mean((pred - true)^2))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pairs(preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]], pkey: str, tkey: str,
                 name: str) -> None:
    if len(preds) != len(targets):
        raise ValueError(f"{name}: {len(preds)} predictions for {len(targets)} targets")
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        if not isinstance(p, dict) or not isinstance(p.get(pkey), Tensor):
            raise ValueError(f"{name}: preds[{i}] must be a dict with a Tensor {pkey!r}")
        if not isinstance(t, dict) or not isinstance(t.get(tkey), Tensor):
            raise ValueError(f"{name}: targets[{i}] must be a dict with a Tensor {tkey!r}")


class BitsPerCharacter:
    """Bits per character of a language model over ``update`` calls.

    ``preds``: per item ``{"token_logits": [T, V]}`` (unnormalised); ``targets``: per item
    ``{"labels": int64[T]}`` (the true next characters). ``compute()`` gives ``bpc``, ``nll``
    (nats per character), ``perplexity`` (per character, ``exp(nll)``) and ``chars``.
    """

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget every item seen so far."""
        self.nll_sum = 0.0  # nats, float64 accumulation
        self.count = 0

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Add a batch of items (see the class doc)."""
        _check_pairs(preds, targets, "token_logits", "labels", "BitsPerCharacter")
        for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
            logits = p["token_logits"].detach()
            labels = t["labels"].detach().to(logits.device)
            if logits.dim() != 2 or labels.shape != logits.shape[:1]:
                raise ValueError(f"BitsPerCharacter: item {i} has logits {tuple(logits.shape)} and labels "
                                 f"{tuple(labels.shape)}; expected [T, V] and [T]")
            if labels.is_floating_point():
                raise ValueError(f"BitsPerCharacter: item {i} labels must be integers, got {labels.dtype}")
            keep = labels != self.ignore_index
            V = logits.shape[1]
            if bool(((labels[keep] < 0) | (labels[keep] >= V)).any()):
                raise ValueError(f"BitsPerCharacter: item {i} labels must lie in [0, {V})")
            nll = F.cross_entropy(logits[keep].double(), labels[keep].long(), reduction="sum")
            self.nll_sum += float(nll)
            self.count += int(keep.sum())

    def compute(self) -> dict[str, float]:
        """``bpc``, ``nll`` (nats/char), ``perplexity`` and ``chars`` (NaN rates before any character)."""
        if self.count == 0:
            nan = float("nan")
            return {"bpc": nan, "nll": nan, "perplexity": nan, "chars": 0.0}
        nll = self.nll_sum / self.count
        return {"bpc": nll / math.log(2.0), "nll": nll, "perplexity": math.exp(nll),
                "chars": float(self.count)}


class RegressionError:
    """RMSE and MAE of regression predictions over ``update`` calls, in the data's units.

    ``preds`` / ``targets``: per item a dict with ``key`` (default ``"value"``), a float tensor of
    O values (any shape, the same for both). Errors are multiplied by ``scale`` (module doc).
    ``compute()`` gives ``rmse``, ``mae``, ``mse`` (all scaled) and ``count`` (values scored).
    """

    def __init__(self, scale: float = 1.0, key: str = "value") -> None:
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.scale, self.key = float(scale), key
        self.reset()

    def reset(self) -> None:
        """Forget every item seen so far."""
        self.sq_sum = 0.0
        self.abs_sum = 0.0
        self.count = 0

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Add a batch of items (see the class doc)."""
        _check_pairs(preds, targets, self.key, self.key, "RegressionError")
        if not preds:
            return
        for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
            if p[self.key].numel() != t[self.key].numel():
                raise ValueError(f"RegressionError: item {i} predicts {p[self.key].numel()} values for "
                                 f"{t[self.key].numel()} targets")
        pred = torch.cat([p[self.key].detach().reshape(-1).double().cpu() for p in preds])  # (sum O,)
        true = torch.cat([t[self.key].detach().reshape(-1).double().cpu() for t in targets])
        err = (pred - true) * self.scale
        self.sq_sum += float((err * err).sum())
        self.abs_sum += float(err.abs().sum())
        self.count += err.numel()

    def compute(self) -> dict[str, float]:
        """``rmse``, ``mae``, ``mse`` and ``count`` (NaN errors before any value)."""
        if self.count == 0:
            nan = float("nan")
            return {"rmse": nan, "mae": nan, "mse": nan, "count": 0.0}
        mse = self.sq_sum / self.count
        return {"rmse": math.sqrt(mse), "mae": self.abs_sum / self.count, "mse": mse,
                "count": float(self.count)}
