"""``structpred.ops.keypoints`` against naive per-keypoint loops and torchvision's private functions.

The naive references are written from the documented semantics (module docstring of
``structpred.ops.keypoints``): the target cell is the floor of the keypoint's position in heatmap
cells (the far edge to the last cell); back from a heatmap, a bicubic resize (Keys' kernel,
``a = -0.75``, source ``(d + 0.5) * M / size - 0.5``, neighbours clamped to the map) to the RoI's
whole-pixel size, the first maximum, the cell's centre scaled back into the RoI.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection import transform as tv_transform

from structpred.ops.keypoints import heatmaps_to_keypoints, keypoints_to_heatmap, resize_keypoints


def naive_heatmap(keypoints: torch.Tensor, rois: torch.Tensor, M: int) -> tuple[list, list]:
    cells, valid = [], []
    for kps, (x1, y1, x2, y2) in zip(keypoints.tolist(), rois.tolist(), strict=True):
        row_c, row_v = [], []
        for x, y, v in kps:
            col = M - 1 if x == x2 else math.floor((x - x1) * (M / (x2 - x1)))
            row = M - 1 if y == y2 else math.floor((y - y1) * (M / (y2 - y1)))
            ok = 0 <= col < M and 0 <= row < M and v > 0
            row_c.append(row * M + col if ok else 0)
            row_v.append(int(ok))
        cells.append(row_c)
        valid.append(row_v)
    return cells, valid


def _cubic(t: float) -> list[float]:
    """Keys' cubic convolution weights (a = -0.75) of the 4 taps around a fraction ``t``."""
    a = -0.75

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def naive_bicubic(m: list[list[float]], out_h: int, out_w: int) -> list[list[float]]:
    H, W = len(m), len(m[0])
    out = []
    for i in range(out_h):
        sy = (i + 0.5) * H / out_h - 0.5
        y0, wy = math.floor(sy), _cubic(sy - math.floor(sy))
        line = []
        for j in range(out_w):
            sx = (j + 0.5) * W / out_w - 0.5
            x0, wx = math.floor(sx), _cubic(sx - math.floor(sx))
            total = 0.0
            for a in range(4):
                yy = min(max(y0 - 1 + a, 0), H - 1)
                for b in range(4):
                    xx = min(max(x0 - 1 + b, 0), W - 1)
                    total += wy[a] * wx[b] * m[yy][xx]
            line.append(total)
        out.append(line)
    return out


def naive_keypoints(maps: torch.Tensor, rois: torch.Tensor) -> tuple[list, list]:
    points, scores = [], []
    for per_roi, (x1, y1, x2, y2) in zip(maps.tolist(), rois.tolist(), strict=True):
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        W, H = math.ceil(w), math.ceil(h)
        p_roi, s_roi = [], []
        for m in per_roi:
            big = naive_bicubic(m, H, W)
            flat = [v for line in big for v in line]
            pos = max(range(len(flat)), key=lambda k: (flat[k], -k))  # the first maximum
            row, col = divmod(pos, W)
            p_roi.append([(col + 0.5) * w / W + x1, (row + 0.5) * h / H + y1, 1.0])
            s_roi.append(flat[pos])
        points.append(p_roi)
        scores.append(s_roi)
    return points, scores


def _rois(n: int, g: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 100
    wh = torch.exp(torch.rand(n, 2, generator=g, dtype=dtype) * 4) * 0.5  # 0.5 .. 27 px
    return torch.cat([xy, xy + wh], 1)


def _keypoints(rois: torch.Tensor, K: int, g: torch.Generator) -> torch.Tensor:
    """Keypoints around each RoI (some outside), some unlabelled, a few exactly on the far edges."""
    Q = rois.shape[0]
    u = torch.rand(Q, K, 2, generator=g, dtype=rois.dtype) * 1.4 - 0.2  # -0.2 .. 1.2 of the RoI
    x = rois[:, None, 0] + u[..., 0] * (rois[:, None, 2] - rois[:, None, 0])
    y = rois[:, None, 1] + u[..., 1] * (rois[:, None, 3] - rois[:, None, 1])
    v = torch.randint(0, 3, (Q, K), generator=g).to(rois.dtype)
    kps = torch.stack([x, y, v], 2)
    if Q and K > 2:
        mid_x, mid_y = (rois[0, 0] + rois[0, 2]) / 2, (rois[0, 1] + rois[0, 3]) / 2
        kps[0, 0] = torch.stack([rois[0, 2], mid_y, rois.new_tensor(2)])  # right edge: last column
        kps[0, 1] = torch.stack([mid_x, rois[0, 3], rois.new_tensor(1)])  # bottom edge: last row
        kps[0, 2] = torch.stack([rois[0, 0], rois[0, 1], rois.new_tensor(2)])  # top-left: cell 0
    return kps


@pytest.mark.parametrize(("Q", "K", "M"), [(0, 3, 56), (1, 1, 4), (7, 5, 56), (20, 17, 28)])
def test_keypoints_to_heatmap_matches_naive_and_torchvision(Q: int, K: int, M: int) -> None:
    g = torch.Generator().manual_seed(Q + K)
    rois = _rois(Q, g, torch.float64)
    kps = _keypoints(rois, K, g)
    cells, valid = keypoints_to_heatmap(kps, rois, M)
    assert cells.shape == valid.shape == (Q, K) and cells.dtype == valid.dtype == torch.int64
    ref_cells, ref_valid = naive_heatmap(kps, rois, M)
    assert cells.tolist() == ref_cells and valid.tolist() == ref_valid
    if Q and K > 2:
        assert valid[0, :3].tolist() == [1, 1, 1]
        assert cells[0, 0] % M == M - 1 and cells[0, 1] // M == M - 1 and cells[0, 2] == 0
    # torchvision, in float32 (its training dtype)
    rois32, kps32 = rois.float(), kps.float()
    t_cells, t_valid = tv_roi_heads.keypoints_to_heatmap(kps32, rois32, M)
    o_cells, o_valid = keypoints_to_heatmap(kps32, rois32, M)
    assert torch.equal(o_cells, t_cells) and torch.equal(o_valid, t_valid)


@pytest.mark.parametrize(("Q", "K", "M"), [(0, 4, 56), (1, 1, 8), (6, 3, 8), (12, 17, 56)])
def test_heatmaps_to_keypoints_matches_torchvision(Q: int, K: int, M: int) -> None:
    g = torch.Generator().manual_seed(10 * Q + K)
    rois = _rois(Q, g)
    if Q > 2:
        rois[1, 2:] = rois[1, :2] + 0.3  # under one pixel: clamped to 1
        rois[2, 2:] = rois[2, :2] + torch.tensor([40.0, 3.0])  # exactly whole pixels
    maps = torch.randn(Q, K, M, M, generator=g)
    points, scores = heatmaps_to_keypoints(maps, rois)
    assert points.shape == (Q, K, 3) and scores.shape == (Q, K)
    assert points.dtype == scores.dtype == torch.float32
    t_points, t_scores = tv_roi_heads.heatmaps_to_keypoints(maps, rois)
    torch.testing.assert_close(points, t_points, atol=1e-4, rtol=0)
    torch.testing.assert_close(scores, t_scores, atol=1e-5, rtol=0)


def test_heatmaps_to_keypoints_matches_a_naive_bicubic_loop() -> None:
    g = torch.Generator().manual_seed(3)
    rois = torch.tensor([[2.0, 3.0, 9.5, 8.25], [0.0, 0.0, 3.0, 11.0], [5.0, 5.0, 5.4, 5.2]])
    maps = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
    points, scores = heatmaps_to_keypoints(maps, rois.double())
    ref_points, ref_scores = naive_keypoints(maps, rois.double())
    assert points.dtype == scores.dtype == torch.float64
    torch.testing.assert_close(points, torch.tensor(ref_points, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(scores, torch.tensor(ref_scores, dtype=torch.float64), atol=1e-9, rtol=0)


def test_heatmaps_to_keypoints_ties_take_the_first_maximum_and_scores_have_gradients() -> None:
    maps = torch.zeros(1, 1, 4, 4, dtype=torch.float64)  # all equal: the first cell wins
    points, _ = heatmaps_to_keypoints(maps, torch.tensor([[0.0, 0.0, 4.0, 4.0]], dtype=torch.float64))
    assert points[0, 0].tolist() == [0.5, 0.5, 1.0]
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[1.0, 2.0, 8.0, 7.5], [0.0, 0.0, 3.3, 4.0]], dtype=torch.float64)
    torch.autograd.gradcheck(lambda m: heatmaps_to_keypoints(m, rois)[1], (maps,))


def test_resize_keypoints_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(7)
    kps = torch.rand(4, 5, 3, generator=g) * 300
    for old, new in [((300, 200), (600, 400)), ((123, 457), (97, 360)), ((1, 1), (1, 1))]:
        ours = resize_keypoints(kps, old, new)
        theirs = tv_transform.resize_keypoints(kps, list(old), list(new))
        assert torch.equal(ours, theirs)
    assert resize_keypoints(torch.zeros(0, 17, 3), (10, 20), (20, 40)).shape == (0, 17, 3)


def test_bad_shapes_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"keypoints must be Tensor\[Q, K, 3\]"):
        keypoints_to_heatmap(torch.zeros(2, 3), torch.zeros(2, 4), 56)
    with pytest.raises(ValueError, match="3 RoIs in keypoints but 2 rois"):
        keypoints_to_heatmap(torch.zeros(3, 4, 3), torch.zeros(2, 4), 56)
    with pytest.raises(ValueError, match=r"maps must be Tensor\[Q, K, M, M\]"):
        heatmaps_to_keypoints(torch.zeros(2, 56, 56), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"rois must be Tensor\[Q, 4\]"):
        heatmaps_to_keypoints(torch.zeros(2, 1, 56, 56), torch.zeros(2, 5))
