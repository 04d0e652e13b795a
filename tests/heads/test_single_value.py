"""Single-value heads on real data (scikit-learn's 8 x 8 handwritten digits), their losses
against torch.nn.functional, pooling, and bad input.

Held-out digits are never trained on (``structpred.data.digits`` splits by index). The
classification check uses the ``val`` split: a *linear* model on raw pixels gets ~0.95 there
but only ~0.89 on ``test`` (later writers, a known harder tail of the set).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structpred.data.digits import source_digits  # scikit-learn's digits: a pinned dependency
from structpred.heads.single_value import (
    ClassificationHead,
    RankingHead,
    RegressionHead,
    global_pool,
    pairwise_ranking_loss,
)


def _pixels(split: str) -> tuple[Tensor, Tensor]:
    images, digits = source_digits(split)
    return images.reshape(len(images), 64), digits  # (M, 8, 8) -> (M, 64)


def _fit(params: list[nn.Parameter], loss_fn: Callable[[], Tensor], steps: int, lr: float) -> None:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()


def _mlp() -> nn.Module:
    """A tiny backbone: its pooled features are what the heads read."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU())


# ----------------------------------------------------------------------------- real data


def test_linear_classification_head_on_pixels_beats_090_on_held_out_digits() -> None:
    torch.manual_seed(0)
    x, y = _pixels("train")
    x_val, y_val = _pixels("val")
    head = ClassificationHead(64, 10)
    _fit(list(head.parameters()), lambda: head.loss(head(x), y), steps=100, lr=0.05)
    with torch.no_grad():
        preds = head.predictions(head(x_val))
    accuracy = torch.stack([p["labels"] for p in preds]).eq(y_val).float().mean()
    assert accuracy > 0.9, f"held-out accuracy {accuracy:.3f}"
    assert set(preds[0]) == {"class_logits", "scores", "labels"} and preds[0]["class_logits"].shape == (10,)
    assert 0.1 <= float(preds[0]["scores"]) <= 1.0


def test_regression_head_predicts_the_digit_value_far_better_than_the_mean() -> None:
    torch.manual_seed(0)
    x, y = _pixels("train")
    x_test, y_test = _pixels("test")
    backbone, head = _mlp(), RegressionHead(128, 1, loss="smooth_l1")
    _fit(
        [*backbone.parameters(), *head.parameters()],
        lambda: head.loss(head(backbone(x)), y.float()),
        300,
        0.01,
    )
    with torch.no_grad():
        pred = head(backbone(x_test)).squeeze(1)  # (M, 1) -> (M,)
    rmse = (pred - y_test).pow(2).mean().sqrt()
    rmse_mean = (y_test.float() - y.float().mean()).pow(2).mean().sqrt()  # predicting the train mean
    assert rmse < 0.7 * rmse_mean, f"RMSE {rmse:.2f} vs {rmse_mean:.2f} for the mean"


def _pairs(y: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` random pairs of different digits and targets +1 where the first is larger."""
    a, b = torch.randint(0, len(y), (2, n), generator=g)
    keep = y[a] != y[b]
    a, b = a[keep], b[keep]
    return a, b, torch.where(y[a] > y[b], 1.0, -1.0)


def test_ranking_head_orders_held_out_pairs_which_digit_is_larger() -> None:
    torch.manual_seed(0)
    x, y = _pixels("train")
    x_test, y_test = _pixels("test")
    g = torch.Generator().manual_seed(0)
    backbone, head = _mlp(), RankingHead(128, margin=1.0)

    def loss() -> Tensor:
        a, b, target = _pairs(y, 512, g)
        return head.losses(head(backbone(x[a])), head(backbone(x[b])), target)["loss_rank"]

    _fit([*backbone.parameters(), *head.parameters()], loss, steps=300, lr=0.01)
    a, b, target = _pairs(y_test, 4000, g)
    with torch.no_grad():
        score = head(backbone(x_test))  # (M,)
    accuracy = ((score[a] > score[b]).float() * 2 - 1).eq(target).float().mean()
    assert accuracy > 0.8, f"pairwise ordering accuracy {accuracy:.3f}"


# ----------------------------------------------------------------------------- losses and pooling


@pytest.mark.parametrize("margin", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pairwise_ranking_loss_equals_torch_margin_ranking_loss(margin: float, reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(64, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(64, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 2, (64,), generator=g).double() * 2 - 1
    ours = pairwise_ranking_loss(a, b, target, margin, reduction)
    peer = F.margin_ranking_loss(a, b, target, margin=margin, reduction=reduction)
    torch.testing.assert_close(ours, peer)
    up = torch.randn_like(ours)
    for g_ours, g_peer in zip(
        torch.autograd.grad(ours, (a, b), up), torch.autograd.grad(peer, (a, b), up), strict=True
    ):
        torch.testing.assert_close(g_ours, g_peer)


def test_regression_losses_equal_torch() -> None:
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 16, 3, generator=g)
    torch.testing.assert_close(RegressionHead(4, 3).loss(pred, target), F.mse_loss(pred, target))
    head = RegressionHead(4, 3, loss="smooth_l1", beta=0.5)
    torch.testing.assert_close(head.loss(pred, target), F.smooth_l1_loss(pred, target, beta=0.5))
    targets = [{"value": t} for t in target]
    assert set(head.losses(pred, targets)) == {"loss_reg"}


def test_heads_read_pooled_feature_maps() -> None:
    fmap = torch.randn(5, 8, 3, 4)
    torch.testing.assert_close(global_pool(fmap), fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(global_pool(fmap, "max"), fmap.amax(dim=(2, 3)))
    assert torch.equal(global_pool(fmap[:, :, 0, 0]), fmap[:, :, 0, 0])  # [B, D] passes through
    assert ClassificationHead(8, 3)(fmap).shape == (5, 3)
    assert RegressionHead(8, 2)(fmap).shape == (5, 2)
    assert RankingHead(8)(fmap).shape == (5,)


def test_classification_losses_from_targets() -> None:
    head = ClassificationHead(4, 3)
    logits = torch.randn(2, 3)
    out = head.losses(logits, [{"labels": torch.tensor(0)}, {"labels": torch.tensor([2])}])
    torch.testing.assert_close(out["loss_cls"], F.cross_entropy(logits, torch.tensor([0, 2])))


# ----------------------------------------------------------------------------- bad input


def test_bad_input() -> None:
    head = ClassificationHead(4, 3)
    with pytest.raises(ValueError, match="expects 4 features"):
        head(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"Tensor\[B, D\] or \[B, C, H, W\]"):
        head(torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        head.loss(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="1 targets for 2 predictions"):
        head.losses(torch.randn(2, 3), [{"labels": torch.tensor(0)}])
    with pytest.raises(ValueError, match="mode must be one of"):
        global_pool(torch.randn(2, 4, 3, 3), "median")
    with pytest.raises(ValueError, match="loss must be one of"):
        RegressionHead(4, 1, loss="l3")
    with pytest.raises(ValueError, match="target must have shape"):
        RegressionHead(4, 2).loss(torch.randn(3, 2), torch.randn(3))
    with pytest.raises(ValueError, match=r"only \+1 and -1"):
        pairwise_ranking_loss(torch.randn(3), torch.randn(3), torch.tensor([1.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match="same shape"):
        pairwise_ranking_loss(torch.randn(3), torch.randn(2), torch.ones(3))
