"""Sequence tasks: character language modelling (bits per character) and regression (RMSE).

Shape shorthand: B sequences, T steps, V vocabulary, O regression outputs.

* ``language_model``: inputs int64 ``[T]`` ids per item; targets ``labels`` int64 ``[T]`` (the
  next character at every step); predictions a list of B dicts ``token_logits`` float ``[T, V]``.
  The vocabulary is the dataset's ``vocab_chars`` (the builder's ``vocab``).
* ``regression``: inputs ``[T, F]`` per item; targets ``value`` float ``[O]``; predictions a list
  of B dicts ``value`` float ``[O]``. The metric reports errors in the data's units
  (``dataset.target_scale``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .base import Headline, Metric, Targets, Task, expect_items, expect_tensor, register_task


class LanguageModelTask(Task):
    """Next-token prediction; bits per character."""

    name = "language_model"
    inputs = "sequence"
    target_keys = {"labels": "int64[T] next ids"}
    prediction_keys = {"token_logits": "float[T, V]"}
    num_classes_rule = "the vocabulary (dataset.vocab_chars -> the builder's vocab)"
    headline = Headline("bpc", False, "bits per character")

    def model_kwargs(self, dataset: Dataset | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        vocab = getattr(dataset, "vocab_chars", None)
        if vocab is not None:
            out.setdefault("vocab", vocab)
        return out

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics.sequence import BitsPerCharacter

        return BitsPerCharacter

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        for i, p in enumerate(expect_items(predictions, batch_size, ["token_logits"], self.name)):
            expect_tensor(p["token_logits"], f"predictions[{i}]['token_logits']", [None, None], "float")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        config: Any = model.config
        V = len(config.vocab)
        ids = torch.randint(0, V, (batch_size, 9), generator=g)  # (B, T + 1)
        return list(ids[:, :-1]), [{"labels": row} for row in ids[:, 1:]]


class RegressionTask(Task):
    """Values per sequence; RMSE and MAE in the data's units."""

    name = "regression"
    inputs = "sequence"
    target_keys = {"value": "float[O]"}
    prediction_keys = {"value": "float[O]"}
    headline = Headline("rmse", False, "RMSE (the data's units)")

    def metric(self, model: nn.Module, dataset: Dataset | None) -> Callable[[], Metric]:
        from ..metrics.sequence import RegressionError

        scale = float(getattr(dataset, "target_scale", 1.0))
        return lambda: RegressionError(scale)

    def check_predictions(self, predictions: Any, batch_size: int) -> None:
        for i, p in enumerate(expect_items(predictions, batch_size, ["value"], self.name)):
            expect_tensor(p["value"], f"predictions[{i}]['value']", [None], "float")

    def sample_batch(self, model: nn.Module, batch_size: int = 2, seed: int = 0) -> tuple[Any, Targets]:
        g = torch.Generator().manual_seed(seed)
        c: Any = model.config
        inputs = [torch.randn(6 + 3 * b, c.input_size, generator=g) for b in range(batch_size)]
        return inputs, [{"value": torch.randn(c.num_classes, generator=g)} for _ in range(batch_size)]


register_task(LanguageModelTask())
register_task(RegressionTask())
