"""Detection tubes: the DP linker against brute-force enumeration of every chain, the online
linker against a naive loop with brute-force matching, hand cases and bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from structpred.ops.linking import OnlineLinker, Tube, link_online, pairwise_iou, tubes_to_mot_rows
from structpred.ops.tube_dp import ChainSearch, link_tubes_dp

# ----------------------------------------------------------------------------- references


def iou_ref(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes, the direct formula (0 between two empty boxes)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def brute_best_chain(boxes, scores, alive, lam, gate, max_gap=0):
    """Every chain of alive detections (steps of at most max_gap + 1 frames), its energy; the best
    (energy, frames, path)."""
    best = None
    nodes = [(t, i) for t in range(len(boxes)) for i in range(len(boxes[t])) if alive[t][i]]

    def energy_of(chain):
        energy = sum(float(scores[t][i]) for t, i in chain)
        for (s, j), (t, i) in zip(chain[:-1], chain[1:], strict=True):
            iou = iou_ref(boxes[s][j].tolist(), boxes[t][i].tolist())
            if iou < gate:
                return None
            energy += lam * iou
        return energy

    def grow(chain):
        nonlocal best
        energy = energy_of(chain)
        if energy is not None and (best is None or energy > best[0] + 1e-12):
            best = (energy, [t for t, _ in chain], [i for _, i in chain])
        last = chain[-1][0]
        for t, i in nodes:
            if 0 < t - last <= max_gap + 1:
                grow([*chain, (t, i)])

    for node in nodes:
        grow([node])
    return best


def brute_tubes(boxes, scores, lam, gate, max_gap=0):
    """Repeated brute-force extraction: [(energy, frames, path)] until no detection is left."""
    alive = [[True] * len(b) for b in boxes]
    out = []
    while True:
        best = brute_best_chain(boxes, scores, alive, lam, gate, max_gap)
        if best is None:
            return out
        out.append(best)
        for t, i in zip(best[1], best[2], strict=True):
            alive[t][i] = False


def random_frames(rng: np.random.Generator, num_frames: int, max_boxes: int, *, allow_empty: bool = True):
    """Random overlapping boxes in a 40 x 40 area and random (also negative) scores."""
    boxes, scores = [], []
    for _ in range(num_frames):
        n = int(rng.integers(0 if allow_empty else 1, max_boxes + 1))
        xy = rng.uniform(0, 20, (n, 2))
        wh = rng.uniform(8, 20, (n, 2))
        boxes.append(torch.from_numpy(np.concatenate([xy, xy + wh], 1)).float())
        scores.append(torch.from_numpy(rng.normal(0.3, 0.6, n)).float())
    return boxes, scores


def box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> list[float]:
    return [x, y, x + w, y + h]


def frames_of(*frames: list[list[float]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-frame boxes from lists of xyxy lists, all scored 0.9."""
    boxes = [torch.tensor(f, dtype=torch.float32).reshape(-1, 4) for f in frames]
    return boxes, [torch.full((b.shape[0],), 0.9) for b in boxes]


# ----------------------------------------------------------------------------- DP linker


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    ("lam", "gate", "max_gap"), [(1.0, 0.0, 0), (0.0, 0.0, 0), (2.5, 0.2, 0), (1.0, 0.1, 1), (0.5, 0.0, 2)]
)
def test_dp_equals_brute_force(seed: int, lam: float, gate: float, max_gap: int) -> None:
    rng = np.random.default_rng(seed)
    boxes, scores = random_frames(rng, int(rng.integers(1, 6 if max_gap else 5)), 3 if max_gap < 2 else 2)
    tubes = link_tubes_dp(boxes, scores, lam, gate=gate, max_gap=max_gap)
    expected = brute_tubes(boxes, scores, lam, gate, max_gap)
    assert len(tubes) == len(expected)
    for tube, (energy, frames, path) in zip(tubes, expected, strict=True):
        assert tube.score == pytest.approx(energy, abs=1e-9)
        assert tube.frames.tolist() == frames
        assert tube.detections.tolist() == path


@pytest.mark.parametrize("max_gap", [0, 2])
def test_dp_incremental_tables_equal_a_fresh_search(max_gap: int) -> None:
    rng = np.random.default_rng(11)
    boxes, scores = random_frames(rng, 30, 4)
    s = [x.double().numpy() for x in scores]
    ious = {
        (a, b): pairwise_iou(boxes[a], boxes[b]) for b in range(30) for a in range(max(0, b - max_gap - 1), b)
    }
    search = ChainSearch(s, ious, 1.0, 0.2, max_gap)
    for _ in range(6):
        chain = search.best()
        assert chain is not None
        search.remove(chain[1], chain[2])
        fresh = ChainSearch(s, ious, 1.0, 0.2, max_gap)
        fresh.alive = [a.copy() for a in search.alive]
        for t in range(30):
            fresh._update(t)
        for t in range(30):
            assert np.array_equal(fresh.values[t], search.values[t])
            assert np.array_equal(fresh.pred_t[t], search.pred_t[t])
        assert fresh.best() == search.best()


def test_dp_tube_contents_and_ids() -> None:
    rng = np.random.default_rng(3)
    boxes, scores = random_frames(rng, 4, 3, allow_empty=False)
    tubes = link_tubes_dp(boxes, scores)
    assert [t.track_id for t in tubes] == list(range(1, len(tubes) + 1))
    used = sorted(
        (int(t), int(i)) for tube in tubes for t, i in zip(tube.frames, tube.detections, strict=True)
    )
    assert used == [(t, i) for t in range(4) for i in range(len(boxes[t]))]  # every detection once
    for tube in tubes:
        for t, i, b, s in zip(tube.frames, tube.detections, tube.boxes, tube.scores, strict=True):
            assert torch.equal(b, boxes[t][i]) and s == scores[t][i]


def test_dp_ties_take_the_lowest_index_and_stay_optimal() -> None:
    # Two identical detections in each of three frames: four optimal chains of equal energy.
    boxes, scores = frames_of([box(0, 0), box(0, 0)], [box(0, 0), box(0, 0)], [box(0, 0), box(0, 0)])
    tubes = link_tubes_dp(boxes, scores, 1.0)
    assert [t.detections.tolist() for t in tubes] == [[0, 0, 0], [1, 1, 1]]
    expected = brute_tubes(boxes, scores, 1.0, 0.0)
    assert [t.score for t in tubes] == pytest.approx([e[0] for e in expected])
    # An end tie: a chain and its extension by a zero-score, zero-IoU box have equal energy; the
    # earliest end wins, so the zero box is left for a tube of its own.
    boxes, scores = frames_of([box(0, 0)], [box(30, 30)])
    scores[1][:] = 0.0
    tubes = link_tubes_dp(boxes, scores)
    assert [t.frames.tolist() for t in tubes] == [[0], [1]]
    # Extending beats starting anew: a zero-score box before a disjoint one joins its chain.
    boxes, scores = frames_of([box(0, 0)], [box(30, 30)])
    scores[0][:] = 0.0
    tubes = link_tubes_dp(boxes, scores)
    assert [t.frames.tolist() for t in tubes] == [[0, 1]] and tubes[0].score == pytest.approx(0.9)
    # A skip tie: through the zero-score box of frame 1 or over it, equal energy; the nearer frame wins.
    boxes, scores = frames_of([box(0, 0)], [box(30, 30)], [box(0, 0)])
    scores[1][:] = 0.0
    tubes = link_tubes_dp(boxes, scores, lam=0.0, max_gap=1)
    assert [t.frames.tolist() for t in tubes] == [[0, 1, 2]]


def test_dp_empty_frame_ends_every_chain() -> None:
    boxes, scores = frames_of([box(0, 0)], [box(1, 0)], [], [box(2, 0)], [box(3, 0)])
    tubes = link_tubes_dp(boxes, scores)
    assert [t.frames.tolist() for t in tubes] == [[0, 1], [3, 4]]
    assert link_tubes_dp(*frames_of([], [], [])) == []
    # max_gap bridges it (one frame skipped), not a gap of two.
    tubes = link_tubes_dp(boxes, scores, max_gap=1)
    assert [t.frames.tolist() for t in tubes] == [[0, 1, 3, 4]]
    boxes, scores = frames_of([box(0, 0)], [], [], [box(2, 0)])
    assert [t.frames.tolist() for t in link_tubes_dp(boxes, scores, max_gap=1)] == [[0], [3]]
    assert [t.frames.tolist() for t in link_tubes_dp(boxes, scores, max_gap=2)] == [[0, 3]]


def test_dp_one_frame_and_one_box() -> None:
    boxes = [torch.tensor([box(0, 0), box(5, 5), box(9, 9)])]
    scores = [torch.tensor([0.2, 0.9, 0.5])]
    tubes = link_tubes_dp(boxes, scores)
    assert [t.detections.tolist() for t in tubes] == [[1], [2], [0]]  # by score
    (tube,) = link_tubes_dp([torch.tensor([box(1, 2)])], [torch.tensor([0.7])])
    assert tube.frames.tolist() == [0] and tube.score == pytest.approx(0.7) and tube.label == 0
    assert link_tubes_dp([], []) == []


def test_dp_lambda_trades_score_for_overlap() -> None:
    # Frame 1 has a higher-scoring box far away and a lower-scoring one that overlaps frame 0's box.
    boxes, scores = frames_of([box(0, 0)], [box(30, 30), box(1, 0)])
    scores[1] = torch.tensor([0.9, 0.6])
    near_iou = iou_ref(box(0, 0), box(1, 0))
    (first, *_) = link_tubes_dp(boxes, scores, lam=0.0, gate=0.0)
    assert first.detections.tolist() == [0, 0]  # lambda 0: the best score per frame
    (first, *_) = link_tubes_dp(boxes, scores, lam=1.0)
    assert first.detections.tolist() == [0, 1]
    assert first.score == pytest.approx(0.9 + 0.6 + near_iou)


def test_dp_gate_and_classes() -> None:
    boxes, scores = frames_of([box(0, 0), box(0, 0)], [box(20, 20), box(1, 0)])
    labels = [torch.tensor([1, 2]), torch.tensor([1, 2])]
    tubes = link_tubes_dp(boxes, scores, labels_per_frame=labels, gate=0.1)
    # class 1: no link passes the gate -> two single-frame tubes; class 2: one linked tube.
    assert [(t.label, t.frames.tolist()) for t in tubes] == [(1, [0]), (1, [1]), (2, [0, 1])]
    assert [t.track_id for t in tubes] == [1, 2, 3]
    assert len(link_tubes_dp(boxes, scores, labels_per_frame=labels, max_tubes=1)) == 2
    assert [
        t.label for t in link_tubes_dp(boxes, scores, labels_per_frame=labels, gate=0.1, min_length=2)
    ] == [2]


def test_tubes_to_mot_rows() -> None:
    boxes, scores = frames_of([box(0, 0), box(50, 50, 4, 6)], [box(1, 0), box(51, 50, 4, 6)])
    rows = tubes_to_mot_rows(link_tubes_dp(boxes, scores))
    assert rows.dtype == torch.float64 and rows.shape == (4, 7)
    assert rows[:, 0].tolist() == [1, 1, 2, 2] and rows[:, 1].tolist() == [1, 2, 1, 2]
    assert rows[1, 2:6].tolist() == [50, 50, 4, 6]
    assert tubes_to_mot_rows([], first_frame=0).shape == (0, 7)
    assert tubes_to_mot_rows(link_tubes_dp(boxes, scores), first_frame=0)[0, 0] == 0


@pytest.mark.parametrize(
    ("boxes", "scores", "match"),
    [
        ([torch.zeros(2, 3)], [torch.zeros(2)], r"frame 0: boxes must be a Tensor\[N, 4\]"),
        ([torch.zeros(2, 4)], [torch.zeros(3)], r"frame 0: scores must be a Tensor\[N\] with N = 2"),
        ([torch.zeros(1, 4), torch.zeros(1, 4)], [torch.zeros(1)], "2 frames but scores_per_frame has 1"),
        ([torch.tensor([[0.0, 0, float("nan"), 1]])], [torch.zeros(1)], "frame 0: boxes contain NaN"),
        ([torch.zeros(1, 4)], [torch.tensor([float("nan")])], "frame 0: scores contain NaN"),
        (
            [torch.zeros(0, 4), torch.tensor([[5.0, 0, 1, 1]])],
            [torch.zeros(0), torch.zeros(1)],
            "frame 1: box 0 has",
        ),
        ([torch.zeros(1, 4, dtype=torch.int64)], [torch.zeros(1)], "boxes must be floating point"),
        (torch.zeros(1, 1, 4), [torch.zeros(1)], "sequences with one Tensor per frame"),
    ],
)
def test_bad_detections(boxes, scores, match) -> None:
    with pytest.raises(ValueError, match=match):
        link_tubes_dp(boxes, scores)
    with pytest.raises(ValueError, match=match):
        link_online(boxes, scores)


def test_dp_bad_arguments() -> None:
    boxes, scores = frames_of([box(0, 0)])
    for kwargs, match in [
        ({"lam": -1.0}, "lam must be"),
        ({"lam": math.inf}, "lam must be"),
        ({"gate": 1.5}, "gate must be"),
        ({"max_tubes": 0}, "max_tubes must be"),
        ({"min_length": 0}, "min_length must be"),
        ({"max_gap": -1}, "max_gap must be an int >= 0"),
        ({"labels_per_frame": [torch.tensor([0.5])]}, "frame 0: labels must be an integer"),
        ({"labels_per_frame": [torch.tensor([1, 2])]}, r"frame 0: labels must be a Tensor\[N\] with N = 1"),
        ({"labels_per_frame": []}, "labels_per_frame has 0 frames"),
    ]:
        with pytest.raises(ValueError, match=match):
            link_tubes_dp(boxes, scores, **kwargs)


# ----------------------------------------------------------------------------- online linker


def naive_online(boxes, scores, labels, *, iou_threshold, max_age, min_hits, min_score, birth_score):
    """The documented rules, one loop per step, matching by enumerating every assignment."""
    tracks: list[dict] = []
    done: list[dict] = []
    next_id = 1
    for t, (b, s) in enumerate(zip(boxes, scores, strict=True)):
        b, s = b.double().tolist(), s.tolist()
        lab = [0] * len(s) if labels is None else labels[t].tolist()
        keep = [i for i in range(len(s)) if s[i] >= min_score]
        best, best_total = [None] * len(tracks), 0.0
        for choice in itertools.product([None, *keep], repeat=len(tracks)):
            used = [c for c in choice if c is not None]
            if len(used) != len(set(used)):
                continue
            total, ok = 0.0, True
            for tr, c in zip(tracks, choice, strict=True):
                if c is not None:
                    iou = iou_ref(tr["last"], b[c]) if tr["label"] == lab[c] else 0.0
                    ok &= iou >= iou_threshold and iou > 0
                    total += iou
            if ok and total > best_total + 1e-12:
                best, best_total = list(choice), total
        alive = []
        for tr, c in zip(tracks, best, strict=True):
            if c is None:
                tr["misses"] += 1
                if tr["id"] == 0 or tr["misses"] > max_age:
                    if tr["id"]:
                        done.append(tr)
                    continue
            else:
                tr.update(last=b[c], misses=0)
                tr["rows"].append((t, c))
                if tr["id"] == 0 and len(tr["rows"]) >= min_hits:
                    tr["id"], next_id = next_id, next_id + 1
            alive.append(tr)
        for i in keep:
            if i not in best and s[i] >= birth_score:
                tr = {"last": b[i], "misses": 0, "rows": [(t, i)], "id": 0, "label": lab[i]}
                if min_hits <= 1:
                    tr["id"], next_id = next_id, next_id + 1
                alive.append(tr)
        tracks = alive
    out = []
    for tr in done + tracks:
        if tr["id"]:
            for t, i in tr["rows"]:
                x1, y1, x2, y2 = boxes[t][i].double().tolist()
                out.append((t + 1, tr["id"], x1, y1, x2 - x1, y2 - y1, float(scores[t][i])))
    return sorted(out)


def random_clip(rng: np.random.Generator, num_frames: int = 10):
    """Moving boxes with dropped detections, jitter and a false positive now and then."""
    num = int(rng.integers(1, 4))
    start = rng.uniform(0, 60, (num, 2))
    vel = rng.uniform(-4, 4, (num, 2))
    alive = [(int(rng.integers(0, 4)), int(rng.integers(num_frames - 3, num_frames + 1))) for _ in range(num)]
    boxes, scores, labels = [], [], []
    for t in range(num_frames):
        rows = []
        for k in range(num):
            if alive[k][0] <= t < alive[k][1] and rng.random() > 0.2:
                xy = start[k] + vel[k] * t + rng.normal(0, 1.0, 2)
                rows.append([*xy, *(xy + 12 + rng.normal(0, 0.5, 2))])
        if rng.random() < 0.3:
            xy = rng.uniform(0, 70, 2)
            rows.append([*xy, *(xy + 10)])
        boxes.append(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4))
        scores.append(torch.from_numpy(rng.uniform(0.1, 1.0, len(rows))).float())
        labels.append(torch.from_numpy(rng.integers(1, 3, len(rows))))
    return boxes, scores, labels


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(
    "params",
    [
        {"iou_threshold": 0.3, "max_age": 1, "min_hits": 1, "min_score": 0.0, "birth_score": 0.0},
        {"iou_threshold": 0.1, "max_age": 3, "min_hits": 2, "min_score": 0.2, "birth_score": 0.5},
        {"iou_threshold": 0.5, "max_age": 0, "min_hits": 3, "min_score": 0.0, "birth_score": 0.3},
    ],
)
def test_online_equals_naive_loop(seed: int, params: dict) -> None:
    rng = np.random.default_rng(100 + seed)
    boxes, scores, labels = random_clip(rng)
    use_labels = labels if seed % 2 else None
    tubes = link_online(boxes, scores, use_labels, **params)
    rows = tubes_to_mot_rows(tubes)
    expected = naive_online(boxes, scores, use_labels, **params)
    assert len(rows) == len(expected)
    np.testing.assert_allclose(rows.numpy(), np.array(expected).reshape(-1, 7), rtol=0, atol=1e-6)


def crossing(num_frames: int = 12) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two boxes moving towards each other along x (3 px per frame), 4 px apart in y."""
    frames = [[box(3 * t, 0), box(33 - 3 * t, 4)] for t in range(num_frames)]
    return frames_of(*frames)


def test_online_crossing_objects_keep_their_ids() -> None:
    boxes, scores = crossing()
    tubes = link_online(boxes, scores, iou_threshold=0.3)
    assert len(tubes) == 2
    for tube in tubes:  # each tube moves one way all along: no identity switch at the crossing
        steps = torch.diff(tube.boxes[:, 0])
        assert len(tube) == 12 and (torch.all(steps > 0) or torch.all(steps < 0))
    # The DP linker too.
    tubes = link_tubes_dp(boxes, scores)
    assert len(tubes) == 2 and all(len(t) == 12 and t.detections.unique().numel() == 1 for t in tubes)


@pytest.mark.parametrize(("max_age", "num_ids"), [(0, 2), (1, 2), (2, 1), (5, 1)])
def test_online_occlusion_gap(max_age: int, num_ids: int) -> None:
    # An object detected in frames 0-2, occluded in frames 3-4 (a gap of 2), seen again in 5-7.
    frames = [[box(t, 0)] if t not in (3, 4) else [] for t in range(8)]
    tubes = link_online(*frames_of(*frames), max_age=max_age)
    assert len(tubes) == num_ids
    if num_ids == 1:
        assert tubes[0].frames.tolist() == [0, 1, 2, 5, 6, 7]
    else:
        assert [t.frames.tolist() for t in tubes] == [[0, 1, 2], [5, 6, 7]]


def test_online_birth_thresholds() -> None:
    # A flicker (2 frames) and a steady object (5 frames).
    frames = [[box(0, 0), box(40, 40)] if t < 2 else [box(0, 0)] for t in range(5)]
    boxes, scores = frames_of(*frames)
    tubes = link_online(boxes, scores, min_hits=3)
    assert len(tubes) == 1 and tubes[0].frames.tolist() == [0, 1, 2, 3, 4]  # frames before confirmation too
    assert len(link_online(boxes, scores, min_hits=2)) == 2
    # birth_score: a weak detection cannot start a track but can continue one.
    scores = [torch.tensor([0.9, 0.2]), torch.tensor([0.2, 0.2]), *scores[2:]]
    tubes = link_online(boxes, scores, birth_score=0.5)
    assert [t.frames.tolist() for t in tubes] == [[0, 1, 2, 3, 4]]
    # min_score: a detection below it is not used at all; the track dies at the gap (max_age 0).
    tubes = link_online(boxes, scores, min_score=0.5, max_age=0)
    assert [t.frames.tolist() for t in tubes] == [[0], [2, 3, 4]]


def test_online_gate_labels_and_update() -> None:
    linker = OnlineLinker(iou_threshold=0.5)
    ids, out = linker.update(torch.tensor([box(0, 0), box(50, 0)]), torch.tensor([0.9, 0.8]))
    assert ids.tolist() == [1, 2] and out.shape == (2, 4)
    # Box 1 moved 6 px (IoU 0.25 < 0.5): a new track; box 0 moved 1 px: kept.
    ids, out = linker.update(torch.tensor([box(56, 0), box(1, 0)]), torch.tensor([0.9, 0.8]))
    assert ids.tolist() == [1, 3] and out[0].tolist() == box(1, 0)
    assert [t.frames.tolist() for t in linker.tubes()] == [[0, 1], [0], [1]]
    assert linker.rows().shape == (4, 7)
    linker.reset()
    assert linker.tubes() == [] and linker.rows().shape == (0, 7)
    # Labels: an overlapping detection of another class never continues a track.
    boxes, scores = frames_of([box(0, 0)], [box(0, 0)])
    tubes = link_online(boxes, scores, [torch.tensor([1]), torch.tensor([2])])
    assert [(t.label, t.frames.tolist()) for t in tubes] == [(1, [0]), (2, [1])]


def test_online_is_deterministic() -> None:
    boxes, scores, labels = random_clip(np.random.default_rng(7), 20)
    a = tubes_to_mot_rows(link_online(boxes, scores, labels, max_age=2))
    b = tubes_to_mot_rows(link_online(boxes, scores, labels, max_age=2))
    assert torch.equal(a, b)
    assert all(isinstance(t, Tube) for t in link_online(boxes, scores))


def test_online_bad_arguments() -> None:
    for kwargs, match in [
        ({"iou_threshold": 0.0}, "iou_threshold must be in"),
        ({"max_age": -1}, "max_age must be an int >= 0"),
        ({"min_hits": 0}, "min_hits must be an int >= 1"),
        ({"min_score": math.nan}, "min_score must be a finite"),
        ({"birth_score": "a"}, "birth_score must be a finite"),
    ]:
        with pytest.raises(ValueError, match=match):
            OnlineLinker(**kwargs)
    linker = OnlineLinker()
    linker.update(torch.zeros(0, 4), torch.zeros(0))
    with pytest.raises(ValueError, match="frame 1: scores must be"):
        linker.update(torch.zeros(2, 4), torch.zeros(1))
    with pytest.raises(ValueError, match="tubes must be a sequence of Tube"):
        tubes_to_mot_rows([object()])  # type: ignore[list-item]
