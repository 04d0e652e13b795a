"""Selective Search: flat rectangles found exactly, ranking and box contract, similarity terms by
hand, grouping against a naive from-the-pixels reference, recall against a naive loop, recall
on the shapes world, and bad input.

The grouping reference recomputes every region's histograms from its pixels and every
similarity of every adjacent pair from scratch at each step (O(R^3)): it checks the
size-weighted propagation of histograms and the neighbour updates of the fast version.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structpred.data import ShapesWorld
from structpred.ops import box_iou
from structpred.proposals import (
    fill_similarity,
    hierarchical_grouping,
    histogram_intersection,
    proposal_recall,
    selective_search,
    size_similarity,
    strategies,
)
from structpred.proposals.grouping import (
    COLOR_BINS,
    TEXTURE_BINS,
    adjacency,
    color_histograms,
    region_boxes,
    relabel,
    texture_codes,
    texture_histograms,
)
from structpred.proposals.selective_search import COLOR_SPACES, convert_color

H, W = 96, 128
# (rgb colour, rows r0:r1, cols c0:c1) of flat rectangles on a grey background.
RECTANGLES = [
    ((0.9, 0.1, 0.1), (10, 40), (8, 50)),
    ((0.1, 0.8, 0.2), (50, 85), (15, 45)),
    ((0.1, 0.2, 0.9), (20, 60), (70, 110)),
    ((0.95, 0.9, 0.1), (70, 90), (60, 120)),
]


def rectangles_image() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.full((3, H, W), 0.5)
    boxes = []
    for rgb, (r0, r1), (c0, c1) in RECTANGLES:
        image[:, r0:r1, c0:c1] = torch.tensor(rgb)[:, None, None]
        boxes.append([c0, r0, c1, r1])
    return image, torch.tensor(boxes, dtype=torch.float32)


@pytest.fixture(scope="module")
def rectangles() -> tuple[torch.Tensor, torch.Tensor]:
    return rectangles_image()


@pytest.fixture(scope="module")
def shapes_image() -> torch.Tensor:
    return ShapesWorld("val", size=96, num_images=1)[0][0]


@pytest.fixture(scope="module")
def shapes_proposals(shapes_image: torch.Tensor) -> torch.Tensor:
    return selective_search(shapes_image, max_proposals=None, seed=0)


# ------------------------------------------------------------------------- found, contract


@pytest.mark.parametrize("mode", ["single", "fast"])
def test_flat_rectangles_are_found_exactly(rectangles, mode):
    image, gt = rectangles
    boxes = selective_search(image, mode=mode)
    best = box_iou(gt, boxes).max(dim=1).values
    assert (best > 0.95).all(), best  # in practice 1.0: flat rectangles are segmented to the pixel


def test_box_contract(shapes_image, shapes_proposals):
    boxes = shapes_proposals
    assert boxes.dtype == torch.float32 and boxes.dim() == 2 and boxes.shape[1] == 4 and len(boxes) > 50
    x1, y1, x2, y2 = boxes.unbind(1)
    _, h, w = shapes_image.shape
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    assert torch.equal(boxes, boxes.round())  # whole pixels
    assert len(torch.unique(boxes, dim=0)) == len(boxes), "duplicate boxes"
    assert ((x2 - x1) >= 2).all() and ((y2 - y1) >= 2).all()  # default min_box_size
    assert [0, 0, w, h] in boxes.tolist()  # the root of every hierarchy


def test_ranking_is_deterministic_per_seed(shapes_image, shapes_proposals):
    again = selective_search(shapes_image, max_proposals=None, seed=0)
    assert torch.equal(again, shapes_proposals)
    other = selective_search(shapes_image, max_proposals=None, seed=1)
    assert not torch.equal(other, shapes_proposals)
    # The seed only reorders: the set of unique boxes is the same.
    assert sorted(map(tuple, other.tolist())) == sorted(map(tuple, shapes_proposals.tolist()))


def test_max_proposals_is_a_prefix(shapes_image, shapes_proposals):
    top = selective_search(shapes_image, max_proposals=25, seed=0)
    assert torch.equal(top, shapes_proposals[:25])
    assert len(selective_search(shapes_image, max_proposals=10**6)) == len(shapes_proposals)


def test_min_box_size_drops_thin_boxes(shapes_image):
    boxes = selective_search(shapes_image, mode="single", max_proposals=None, min_box_size=12)
    assert len(boxes) > 0
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 12).all()


def test_uint8_input_matches_float(rectangles):
    image, _ = rectangles
    as_uint8 = (image * 255).round().to(torch.uint8)
    ours = selective_search(as_uint8, mode="single")
    assert torch.equal(ours, selective_search(as_uint8.double() / 255, mode="single"))


def test_modes_are_the_papers():
    fast = strategies("fast")
    assert len(fast) == 8
    assert {s.color_space for s in fast} == {"hsv", "lab"} and {s.k for s in fast} == {50, 100}
    assert {s.similarities for s in fast} == {
        ("color", "texture", "size", "fill"),
        ("texture", "size", "fill"),
    }
    assert [(s.color_space, s.k) for s in strategies("single")] == [("hsv", 100)]
    assert len(strategies("quality")) == 80
    assert {s.k for s in strategies("fast", scale=300)} == {300}


def test_quality_mode_runs_every_color_space():
    image = ShapesWorld("val", size=32, num_images=1)[0][0]
    boxes = selective_search(image, mode="quality", max_proposals=None)
    assert len(boxes) > 0 and len(torch.unique(boxes, dim=0)) == len(boxes)
    rgb = np.random.default_rng(0).random((8, 9, 3))
    for space in COLOR_SPACES:
        out = convert_color(rgb, space)
        assert out.shape[:2] == (8, 9) and out.min() >= 0 and out.max() <= 1, space


# ----------------------------------------------------------------------- features by hand


def test_similarity_terms_by_hand():
    a = np.array([0.5, 0.3, 0.2])
    b = np.array([0.1, 0.6, 0.3])
    assert histogram_intersection(a, b) == pytest.approx(0.1 + 0.3 + 0.2)
    assert histogram_intersection(a, a) == pytest.approx(1.0)
    assert histogram_intersection(np.stack([a, b]), a).tolist() == pytest.approx([1.0, 0.6])
    assert size_similarity(10, 30, 100.0) == pytest.approx(0.6)
    # Two 2x2 squares one column apart: the box around both is 5 x 2 = 10, 2 px of it empty.
    assert fill_similarity(np.array([0, 0, 2, 2]), np.array([3, 0, 5, 2]), 4, 4, 100.0) == pytest.approx(0.98)
    # One region inside the other's box: nothing to fill.
    assert fill_similarity(np.array([0, 0, 4, 4]), np.array([1, 1, 2, 2]), 15, 1, 100.0) == pytest.approx(1.0)


def test_histograms_boxes_adjacency_by_hand():
    labels = np.array([[0, 0, 1], [2, 2, 1]])
    image = np.array([[[0.0], [0.99], [0.5]], [[1.0], [1.0], [0.5]]])  # (2, 3, 1) one channel
    hist = color_histograms(labels, image, 3)
    assert hist.shape == (3, COLOR_BINS)
    assert hist[0, 0] == 0.5 and hist[0, 24] == 0.5 and hist[1, 12] == 1.0 and hist[2, 24] == 1.0
    assert region_boxes(labels, 3).tolist() == [[0, 0, 2, 1], [2, 0, 3, 2], [0, 1, 2, 2]]
    assert adjacency(labels, 3).tolist() == [[0, 1], [0, 2], [1, 2]]
    flat = texture_codes(np.full((5, 6, 2), 0.3))  # no gradient anywhere: every response in bin 0
    texture = texture_histograms(np.zeros((5, 6), dtype=np.int64), flat, 1)
    assert texture.shape == (1, 2 * 8 * TEXTURE_BINS)
    assert texture[0, ::TEXTURE_BINS].tolist() == [1 / 16] * 16 and texture.sum() == pytest.approx(1.0)
    relabelled, n = relabel(np.array([[5, 5], [9, 7]]))
    assert n == 3 and relabelled.tolist() == [[0, 0], [2, 1]]


# ------------------------------------------------------------------------------- grouping


def naive_grouping(labels: np.ndarray, image: np.ndarray, similarities: tuple[str, ...]) -> list[tuple]:
    """Merges as (i, j) from the pixels: every region's features and pair similarity recomputed."""
    H_, W_ = labels.shape
    color_codes = np.clip((image * COLOR_BINS).astype(int), 0, COLOR_BINS - 1)  # (H, W, C)
    tex = texture_codes(image)
    masks = {r: labels == r for r in range(labels.max() + 1)}
    merges, t = [], len(masks)

    def feats(mask):
        c = np.concatenate([np.bincount(color_codes[..., k][mask], minlength=COLOR_BINS) for k in range(3)])
        x = np.bincount(tex[mask].ravel(), minlength=tex.shape[-1] * TEXTURE_BINS)
        rows, cols = np.nonzero(mask)
        box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        return c / c.sum(), x / x.sum(), mask.sum(), box

    def touching(m1, m2):
        pairs = [(m1[:, :-1], m2[:, 1:]), (m1[:, 1:], m2[:, :-1]), (m1[:-1], m2[1:]), (m1[1:], m2[:-1])]
        return any((a & b).any() for a, b in pairs)

    while len(masks) > 1:
        best = None
        for i in sorted(masks):
            for j in sorted(masks):
                if j <= i or not touching(masks[i], masks[j]):
                    continue
                (ci, ti, si, bi), (cj, tj, sj, bj) = feats(masks[i]), feats(masks[j])
                s = 0.0
                s += histogram_intersection(ci, cj) if "color" in similarities else 0.0
                s += histogram_intersection(ti, tj) if "texture" in similarities else 0.0
                s += size_similarity(si, sj, H_ * W_) if "size" in similarities else 0.0
                s += fill_similarity(bi, bj, si, sj, H_ * W_) if "fill" in similarities else 0.0
                if best is None or s > best[0] + 1e-12:
                    best = (s, i, j)
        assert best is not None
        _, i, j = best
        masks[t] = masks.pop(i) | masks.pop(j)
        merges.append((i, j))
        t += 1
    return merges


@pytest.mark.parametrize(
    "similarities",
    [("color", "texture", "size", "fill"), ("texture", "size", "fill"), ("fill",), ("size",), ("color",)],
)
def test_grouping_matches_naive_reference(similarities):
    rng = np.random.default_rng(3)
    blocks = rng.permutation(16).reshape(4, 4)
    labels = np.kron(blocks, np.ones((5, 4), dtype=np.int64))  # (20, 16): 16 regions of 5 x 4
    labels[6:9, 3:11] = 16  # a 17th region across blocks, so sizes and boxes differ
    labels, R = relabel(labels)
    image = rng.random((R, 3))[labels] * 0.7 + 0.3 * rng.random(labels.shape + (3,))  # (20, 16, 3)
    hierarchy = hierarchical_grouping(
        labels,
        color_histograms(labels, image, R),
        texture_histograms(labels, texture_codes(image), R),
        similarities,
    )
    assert [tuple(m) for m in hierarchy.merges.tolist()] == naive_grouping(labels, image, similarities)


def test_grouping_merges_everything_once(shapes_image):
    rgb = shapes_image.permute(1, 2, 0).double().numpy()
    from skimage.segmentation import felzenszwalb

    labels, R = relabel(felzenszwalb(rgb, scale=50, sigma=0.8, min_size=20))
    assert R > 10
    hierarchy = hierarchical_grouping(
        labels, color_histograms(labels, rgb, R), texture_histograms(labels, texture_codes(rgb), R)
    )
    M = 2 * R - 1
    assert (
        hierarchy.num_initial == R
        and hierarchy.merges.shape == (R - 1, 2)
        and hierarchy.boxes.shape == (M, 4)
    )
    assert sorted(hierarchy.merges.ravel().tolist()) == list(range(M - 1))  # each region merged once
    assert (hierarchy.merges.max(axis=1) < np.arange(R, M)).all()  # children exist before parents
    assert hierarchy.boxes[-1].tolist() == [0, 0, labels.shape[1], labels.shape[0]]
    assert np.array_equal(hierarchy.boxes[:R], region_boxes(labels, R))
    i, j = hierarchy.merges[0]
    assert hierarchy.boxes[R].tolist() == [
        *np.minimum(hierarchy.boxes[i, :2], hierarchy.boxes[j, :2]).tolist(),
        *np.maximum(hierarchy.boxes[i, 2:], hierarchy.boxes[j, 2:]).tolist(),
    ]


# --------------------------------------------------------------------------------- recall


def naive_recall(proposals, gts, counts, threshold):
    covered, total = [0] * len(counts), 0
    for pred, gt in zip(proposals, gts, strict=True):
        for g in gt.tolist():
            total += 1
            for k, n in enumerate(counts):
                best = 0.0
                for p in pred[:n].tolist():
                    iw = max(0.0, min(g[2], p[2]) - max(g[0], p[0]))
                    ih = max(0.0, min(g[3], p[3]) - max(g[1], p[1]))
                    union = (g[2] - g[0]) * (g[3] - g[1]) + (p[2] - p[0]) * (p[3] - p[1]) - iw * ih
                    best = max(best, iw * ih / union if union > 0 else 0.0)
                covered[k] += best >= threshold
    return [c / total for c in covered]


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 50
    return torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * 30], 1)


def test_recall_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    proposals = [random_boxes(n, g) for n in (40, 0, 7, 25)]
    gts = [random_boxes(n, g) for n in (5, 3, 4, 0)]
    gts[0] = torch.cat([gts[0], proposals[0][30:32]])  # exact hits at rank 31, 32
    counts = (1, 5, 10, 31, 32, 100)
    recall = proposal_recall(proposals, gts, counts, iou_thresholds=(0.3, 0.5, 0.7))
    assert set(recall) == {0.3, 0.5, 0.7}
    for t, values in recall.items():
        assert values.shape == (len(counts),)
        assert values.tolist() == pytest.approx(naive_recall(proposals, gts, counts, t))
    assert (recall[0.7].diff() >= 0).all() and (recall[0.3] >= recall[0.7]).all()


def test_recall_on_shapes_world_is_high():
    ds = ShapesWorld("val", size=128, num_images=10)
    proposals, gts = zip(*[(selective_search(img), target["boxes"]) for img, target in ds], strict=True)
    recall = proposal_recall(list(proposals), list(gts), [2000], iou_thresholds=(0.5,))
    assert recall[0.5].item() >= 0.85  # measured 0.958 (fast mode, seed 0)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((3, 8, 8)), "must be a Tensor"),
        (torch.zeros(8, 8), r"\[3, H, W\]"),
        (torch.zeros(1, 3, 8, 8), r"\[3, H, W\]"),
        (torch.zeros(4, 8, 8), r"\[3, H, W\]"),
        (torch.zeros(8, 8, 3), r"\[3, H, W\]"),
        (torch.zeros(3, 0, 8), "empty"),
        (torch.zeros(3, 8, 8, dtype=torch.int32), "uint8"),
        (torch.full((3, 8, 8), 255.0), r"\[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), "NaN"),
    ],
)
def test_bad_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        selective_search(image)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "slow"}, "mode"),
        ({"max_proposals": 0}, "max_proposals"),
        ({"max_proposals": 2.5}, "max_proposals"),
        ({"min_size": 0}, "min_size"),
        ({"seed": -1}, "seed"),
        ({"scale": 0.0}, "scale"),
        ({"scale": True}, "scale"),
        ({"min_box_size": -1}, "min_box_size"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        selective_search(torch.rand(3, 16, 16), **kwargs)


def test_bad_recall_inputs_raise():
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="images"):
        proposal_recall([box], [box, box], [1])
    with pytest.raises(ValueError, match=r"Tensor\[N, 4\]"):
        proposal_recall([box[0]], [box], [1])
    with pytest.raises(ValueError, match="count"):
        proposal_recall([box], [box], [0])
    with pytest.raises(ValueError, match="counts"):
        proposal_recall([box], [box], [])
    with pytest.raises(ValueError, match="iou_thresholds"):
        proposal_recall([box], [box], [1], iou_thresholds=(1.5,))
    with pytest.raises(ValueError, match="no boxes"):
        proposal_recall([box], [torch.zeros(0, 4)], [1])


def test_bad_grouping_inputs_raise():
    labels = np.array([[0, 1], [1, 1]])
    hist = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="similarities"):
        hierarchical_grouping(labels, hist, hist, ("shape",))
    with pytest.raises(ValueError, match="similarities"):
        hierarchical_grouping(labels, hist, hist, ())
    with pytest.raises(ValueError, match="non-negative"):
        hierarchical_grouping(labels - 1, hist, hist)
    with pytest.raises(ValueError, match="missing"):
        hierarchical_grouping(labels * 2, np.full((3, 3), 1 / 3), np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="color similarity needs"):
        hierarchical_grouping(labels, None, hist)
    with pytest.raises(ValueError, match="texture similarity needs"):
        hierarchical_grouping(labels, hist, hist[:1])
    assert len(hierarchical_grouping(labels, None, None, ("size", "fill")).merges) == 1
