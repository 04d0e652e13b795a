"""Bits per character against a hand computation; RMSE / MAE against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from structpred.metrics.sequence import BitsPerCharacter, RegressionError


def hand_bpc(logits: list[list[list[float]]], labels: list[list[int]], ignore: int = -100) -> float:
    """sum over scored characters of -log2 softmax(logits)[label], / characters, by loops."""
    bits, count = 0.0, 0
    for item_logits, item_labels in zip(logits, labels, strict=True):
        for row, label in zip(item_logits, item_labels, strict=True):
            if label == ignore:
                continue
            log_z = math.log(sum(math.exp(v) for v in row))
            bits += -(row[label] - log_z) / math.log(2)
            count += 1
    return bits / count


def test_bpc_matches_a_hand_computation() -> None:
    logits = [[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], [[0.0, 0.0, 0.0], [1.0, -2.0, 0.0]]]
    labels = [[0, 1], [2, -100]]
    metric = BitsPerCharacter()
    metric.update([{"token_logits": torch.tensor(lg)} for lg in logits],
                  [{"labels": torch.tensor(lb)} for lb in labels])
    out = metric.compute()
    assert out["chars"] == 3
    assert out["bpc"] == pytest.approx(hand_bpc(logits, labels), rel=1e-12)
    assert out["nll"] == pytest.approx(out["bpc"] * math.log(2)) and out["perplexity"] == pytest.approx(
        math.exp(out["nll"]))


def test_bpc_uniform_is_log2_v_and_accumulates() -> None:
    V, T = 83, 50
    metric = BitsPerCharacter()
    metric.update([{"token_logits": torch.zeros(T, V)}], [{"labels": torch.randint(0, V, (T,))}])
    assert metric.compute()["bpc"] == pytest.approx(math.log2(V))
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(T, V, generator=g) for _ in range(6)]
    labels = [torch.randint(0, V, (T,), generator=g) for _ in range(6)]
    whole, parts = BitsPerCharacter(), BitsPerCharacter()
    whole.update([{"token_logits": x} for x in logits], [{"labels": y} for y in labels])
    for k in range(0, 6, 2):
        parts.update(
            [{"token_logits": x} for x in logits[k : k + 2]], [{"labels": y} for y in labels[k : k + 2]]
        )
    assert parts.compute()["bpc"] == pytest.approx(whole.compute()["bpc"], rel=1e-12)
    nll = torch.nn.functional.cross_entropy(torch.cat(logits).double(), torch.cat(labels))
    assert whole.compute()["bpc"] == pytest.approx(float(nll) / math.log(2), rel=1e-9)
    whole.reset()
    assert math.isnan(whole.compute()["bpc"]) and whole.compute()["chars"] == 0


def test_bpc_bad_input() -> None:
    metric = BitsPerCharacter()
    with pytest.raises(ValueError, match="1 predictions for 2"):
        metric.update(
            [{"token_logits": torch.zeros(2, 3)}], [{"labels": torch.zeros(2, dtype=torch.int64)}] * 2
        )
    with pytest.raises(ValueError, match="'token_logits'"):
        metric.update([{"value": torch.zeros(2, 3)}], [{"labels": torch.zeros(2, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="'token_logits'"):  # a classifier's key is not a language model's
        metric.update([{"logits": torch.zeros(2, 3)}], [{"labels": torch.zeros(2, dtype=torch.int64)}])
    with pytest.raises(ValueError, match=r"\[T, V\]"):
        metric.update([{"token_logits": torch.zeros(2, 3)}], [{"labels": torch.zeros(3, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="lie in"):
        metric.update([{"token_logits": torch.zeros(2, 3)}], [{"labels": torch.tensor([0, 3])}])
    with pytest.raises(ValueError, match="integers"):
        metric.update([{"token_logits": torch.zeros(2, 3)}], [{"labels": torch.zeros(2)}])


def test_rmse_mae_match_numpy() -> None:
    rng = np.random.default_rng(0)
    pred, true = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    scale = 2.5
    metric = RegressionError(scale=scale)
    for k in range(0, 40, 16):  # uneven batches
        metric.update([{"value": torch.from_numpy(p)} for p in pred[k : k + 16]],
                      [{"value": torch.from_numpy(t)} for t in true[k : k + 16]])
    out = metric.compute()
    err = scale * (pred - true)
    assert out["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-12)
    assert out["mae"] == pytest.approx(float(np.mean(np.abs(err))), rel=1e-12)
    assert out["mse"] == pytest.approx(float(np.mean(err**2)), rel=1e-12) and out["count"] == 120
    metric.reset()
    assert math.isnan(metric.compute()["rmse"])
    metric.update([], [])
    assert metric.compute()["count"] == 0


def test_regression_error_bad_input() -> None:
    with pytest.raises(ValueError, match="scale"):
        RegressionError(scale=0)
    metric = RegressionError()
    with pytest.raises(ValueError, match="2 values for 1"):
        metric.update([{"value": torch.zeros(2)}], [{"value": torch.zeros(1)}])
    with pytest.raises(ValueError, match="'value'"):
        metric.update([{"value": torch.zeros(1)}], [{"labels": torch.zeros(1)}])
    with pytest.raises(ValueError, match="predictions for"):
        metric.update([{"value": torch.zeros(1)}], [])
