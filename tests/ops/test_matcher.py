"""Matcher thresholds and low-quality matches; balanced sampler counts, masks and seeding."""

from __future__ import annotations

import re

import pytest
import torch

from structpred.ops import BalancedPositiveNegativeSampler, Matcher


def naive_match(quality, high, low, allow_low_quality):
    """Loop reference: best gt per prediction, thresholds, then every prediction achieving a
    gt's highest quality (ties included) gets its own best gt back."""
    q = quality.tolist()
    m, n = len(q), len(q[0])
    best = [max(range(m), key=lambda i, j=j: (q[i][j], -i)) for j in range(n)]  # first max on ties
    out = []
    for j in range(n):
        v = q[best[j]][j]
        out.append(best[j] if v >= high else (-2 if v >= low else -1))
    if allow_low_quality:
        for i in range(m):
            top = max(q[i])
            for j in range(n):
                if q[i][j] == top:
                    out[j] = best[j]
    return torch.tensor(out, dtype=torch.int64)


# ---------------------------------------------------------------------------- Matcher


def test_threshold_semantics():
    # one gt; thresholds exactly representable in float32
    quality = torch.tensor([[0.9, 0.5, 0.4999, 0.25, 0.2499, 0.0, 1.0]])
    got = Matcher(0.5, 0.25)(quality)
    assert got.dtype == torch.int64
    assert got.tolist() == [0, 0, -2, -2, -1, -1, 0]
    assert Matcher.BELOW_LOW_THRESHOLD == -1
    assert Matcher.BETWEEN_THRESHOLDS == -2


def test_best_gt_is_chosen():
    quality = torch.tensor([[0.9, 0.1, 0.6], [0.8, 0.95, 0.7]])
    assert Matcher(0.5, 0.3)(quality).tolist() == [0, 1, 1]


def test_equal_thresholds_have_no_between_band():
    quality = torch.tensor([[0.6, 0.5, 0.4999, 0.1]])
    assert Matcher(0.5, 0.5)(quality).tolist() == [0, 0, -1, -1]


def test_input_is_not_modified():
    quality = torch.tensor([[0.9, 0.1, 0.6], [0.8, 0.95, 0.7]])
    before = quality.clone()
    Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
    assert torch.equal(quality, before)


def test_low_quality_matches_with_ties():
    quality = torch.tensor(
        [
            [0.1, 0.4, 0.4, 0.0, 0.05],  # gt 0: best 0.4, tied between predictions 1 and 2
            [0.2, 0.1, 0.5, 0.6, 0.05],  # gt 1: best 0.6, prediction 3
        ]
    )
    assert Matcher(0.7, 0.3)(quality).tolist() == [-1, -2, -2, -2, -1]
    got = Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
    # prediction 1 -> gt 0; prediction 2 reaches gt 0's maximum too but its own best gt is 1;
    # prediction 3 -> gt 1; predictions 0 and 4 reach no gt's maximum and stay unmatched.
    assert got.tolist() == [-1, 0, 1, 1, -1]
    assert torch.equal(got, naive_match(quality, 0.7, 0.3, True))


def test_low_quality_all_zero_gt_row_matches_every_tied_prediction():
    # A gt overlapping nothing has maximum 0, reached by every prediction with quality 0 to it:
    # each of those gets matched to its own best gt (torchvision's behaviour).
    quality = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.8]])
    got = Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
    assert got.tolist() == [1, 0, 1]
    assert torch.equal(got, naive_match(quality, 0.7, 0.3, True))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("allow", [False, True])
def test_matches_naive_reference_with_many_ties(seed, allow):
    g = torch.Generator().manual_seed(seed)
    quality = torch.randint(0, 8, (6, 40), generator=g).float() / 8  # coarse: lots of ties
    got = Matcher(0.625, 0.25, allow)(quality)
    assert torch.equal(got, naive_match(quality, 0.625, 0.25, allow))


def test_empty_ground_truth():
    msg = "No ground-truth boxes available for one of the images during training"
    with pytest.raises(ValueError, match=re.escape(msg)):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))
    with pytest.raises(ValueError, match=re.escape(msg)):
        Matcher(0.7, 0.3, True)(torch.zeros(0, 0))


def test_empty_predictions():
    msg = "No proposal boxes available for one of the images during training"
    with pytest.raises(ValueError, match=re.escape(msg)):
        Matcher(0.7, 0.3)(torch.zeros(3, 0))


def test_low_above_high():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_not_2d(shape):
    with pytest.raises(ValueError, match="match_quality_matrix must be"):
        Matcher(0.7, 0.3)(torch.rand(shape))


# ---------------------------------------------------------------------------- sampler


def make_labels(num_pos, num_neg, num_ignored, generator, num_between=0):
    labels = torch.cat(
        [
            torch.randint(1, 5, (num_pos,), generator=generator),  # class labels >= 1
            torch.zeros(num_neg, dtype=torch.int64),
            torch.full((num_ignored,), -1, dtype=torch.int64),
            torch.full((num_between,), -2, dtype=torch.int64),
        ]
    )
    return labels[torch.randperm(labels.numel(), generator=generator)]


@pytest.mark.parametrize(
    ("num_pos", "num_neg", "batch", "fraction", "expected_pos", "expected_neg"),
    [
        (10, 100, 64, 0.25, 10, 54),  # too few positives: negatives fill the batch
        (50, 100, 64, 0.25, 16, 48),  # plenty of both
        (50, 5, 64, 0.25, 16, 5),  # too few negatives: the batch is not filled
        (100, 100, 100, 0.29, 28, 72),  # int(100 * 0.29) = int(28.999...) = 28
        (3, 2, 512, 0.5, 3, 2),
        (0, 30, 16, 0.5, 0, 16),
        (30, 0, 16, 0.5, 8, 0),
        (30, 30, 16, 1.0, 16, 0),
        (30, 30, 16, 0.0, 0, 16),
    ],
)
def test_sampler_counts(num_pos, num_neg, batch, fraction, expected_pos, expected_neg):
    g = torch.Generator().manual_seed(0)
    labels = make_labels(num_pos, num_neg, 20, g, num_between=5)
    (pos,), (neg,) = BalancedPositiveNegativeSampler(batch, fraction)([labels], generator=g)
    assert int(pos.sum()) == expected_pos == min(num_pos, int(batch * fraction))
    assert int(neg.sum()) == expected_neg == min(num_neg, batch - expected_pos)


def test_sampler_masks_are_uint8_disjoint_and_respect_labels():
    g = torch.Generator().manual_seed(1)
    images = [make_labels(40, 300, 50, g, num_between=10), make_labels(5, 20, 3, g), make_labels(0, 0, 4, g)]
    pos_masks, neg_masks = BalancedPositiveNegativeSampler(32, 0.5)(images, generator=g)
    assert len(pos_masks) == len(neg_masks) == len(images)
    for labels, pos, neg in zip(images, pos_masks, neg_masks, strict=True):
        assert pos.dtype == neg.dtype == torch.uint8
        assert pos.shape == neg.shape == labels.shape
        assert set(pos.unique().tolist()) <= {0, 1} and set(neg.unique().tolist()) <= {0, 1}
        assert not (pos.bool() & neg.bool()).any()
        assert (labels[pos.bool()] >= 1).all()
        assert (labels[neg.bool()] == 0).all()
        assert not (pos.bool() | neg.bool())[labels < 0].any()  # -1 (and -2) are never sampled
    assert [int(p.sum()) for p in pos_masks] == [16, 5, 0]
    assert [int(n.sum()) for n in neg_masks] == [16, 20, 0]


def test_sampler_all_ignored_and_empty():
    pos, neg = BalancedPositiveNegativeSampler(8, 0.5)(
        [torch.full((6,), -1), torch.zeros(0, dtype=torch.int64)]
    )
    assert [p.tolist() for p in pos] == [[0] * 6, []]
    assert [n.tolist() for n in neg] == [[0] * 6, []]


def test_sampler_is_deterministic_with_a_generator():
    g = torch.Generator().manual_seed(2)
    images = [make_labels(60, 400, 30, g), make_labels(10, 50, 0, g)]
    sampler = BalancedPositiveNegativeSampler(64, 0.25)
    global_state = torch.get_rng_state()
    first = sampler(images, generator=torch.Generator().manual_seed(123))
    second = sampler(images, generator=torch.Generator().manual_seed(123))
    other = sampler(images, generator=torch.Generator().manual_seed(124))
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG was not touched
    for a, b in zip(first[0] + first[1], second[0] + second[1], strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(first[0] + first[1], other[0] + other[1], strict=True))


def test_sampler_actually_samples_at_random():
    # 100 positives, 8 taken: over a few seeds, more than 8 distinct positives get picked.
    labels = torch.ones(100, dtype=torch.int64)
    sampler = BalancedPositiveNegativeSampler(16, 0.5)
    picked = torch.zeros(100, dtype=torch.bool)
    for seed in range(5):
        (pos,), _ = sampler([labels], generator=torch.Generator().manual_seed(seed))
        picked |= pos.bool()
    assert int(picked.sum()) > 8


@pytest.mark.parametrize(("batch", "fraction"), [(0, 0.5), (-4, 0.5), (16, -0.1), (16, 1.5)])
def test_sampler_bad_params(batch, fraction):
    with pytest.raises(ValueError, match="batch_size_per_image|positive_fraction"):
        BalancedPositiveNegativeSampler(batch, fraction)


def test_sample_indices_are_the_masks_draws_sorted():
    g = torch.Generator().manual_seed(3)
    images = [make_labels(60, 400, 30, g), make_labels(0, 50, 2, g), torch.zeros(0, dtype=torch.int64)]
    sampler = BalancedPositiveNegativeSampler(64, 0.25)
    pos_masks, neg_masks = sampler(images, generator=torch.Generator().manual_seed(7))
    indices = sampler.sample_indices(images, generator=torch.Generator().manual_seed(7))
    for (pos, neg), pos_mask, neg_mask in zip(indices, pos_masks, neg_masks, strict=True):
        assert pos.dtype == neg.dtype == torch.int64
        assert torch.equal(pos, torch.where(pos_mask.bool())[0])  # same draws, ascending
        assert torch.equal(neg, torch.where(neg_mask.bool())[0])
