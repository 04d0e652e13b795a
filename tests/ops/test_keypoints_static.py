"""``heatmaps_to_keypoints_static`` (fixed shapes over a bound, what torch.export traces) against the
eager per-RoI loop (itself checked against torchvision and a naive bicubic loop in test_keypoints.py).

The static form computes the same bicubic values with another summation order (~1e-5 apart in
float32), so keypoints must agree within 1e-3 px and scores within 1e-4 on random heatmaps; exact
ties (equal cells) must resolve to the first maximum in both.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import roi_heads as tv_roi_heads

from structpred.ops.keypoints import heatmaps_to_keypoints, heatmaps_to_keypoints_static


def _rois(Q: int, bound: tuple[int, int], g: torch.Generator, smallest: float = 0.3) -> torch.Tensor:
    """``Q`` RoIs inside an ``(H, W)`` image, sizes log-uniform from ``smallest`` px to the image."""
    H, W = bound
    side = torch.tensor([W, H], dtype=torch.float32)
    wh = smallest * (side / smallest) ** torch.rand(Q, 2, generator=g)  # (Q, 2)
    xy = torch.rand(Q, 2, generator=g) * (side - wh).clamp(min=0)
    return torch.cat([xy, (xy + wh).minimum(side)], 1)  # (Q, 4) clipped to the image, as detections


def _assert_equal_keypoints(
    maps: torch.Tensor, rois: torch.Tensor, bound: tuple[int, int], **kw: int
) -> None:
    points, scores = heatmaps_to_keypoints(maps, rois)
    s_points, s_scores = heatmaps_to_keypoints_static(maps, rois, bound, **kw)
    assert s_points.shape == points.shape and s_scores.shape == scores.shape
    assert s_points.dtype == points.dtype and s_scores.dtype == scores.dtype
    off = (s_points - points).abs().amax(-1)  # (Q, K) px
    assert int((off > 1e-3).sum()) == 0, f"{int((off > 1e-3).sum())} of {off.numel()} keypoints moved"
    torch.testing.assert_close(s_scores, scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", range(6))
def test_static_matches_eager_on_random_rois(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    bound = (int(torch.randint(8, 160, (1,), generator=g)), int(torch.randint(8, 160, (1,), generator=g)))
    rois = _rois(12, bound, g)
    maps = torch.randn(12, 17, 56, 56, generator=g)
    _assert_equal_keypoints(maps, rois, bound)


def test_static_matches_eager_on_tiny_huge_and_bound_sized_rois() -> None:
    g = torch.Generator().manual_seed(11)
    H, W = 300, 420
    rois = torch.tensor(
        [
            [5.0, 5.0, 5.2, 5.9],  # under a pixel: clamped to 1 x 1
            [0.0, 0.0, 1.0, 1.0],  # exactly one pixel
            [0.0, 0.0, W, H],  # the whole image: exactly the bound
            [0.5, 0.25, W, H],  # 419.5 x 299.75: rounds up to the bound
            [10.0, 3.0, 11.0, 300.0],  # one pixel wide, the image's height
            [2.0, 7.0, 420.0, 8.0],  # the image's width, one pixel high
            [100.0, 50.0, 356.0, 106.0],  # whole pixels, 256 x 56
        ]
    )
    maps = torch.randn(rois.shape[0], 5, 56, 56, generator=g)
    _assert_equal_keypoints(maps, rois, (H, W))
    # ResNet-50 sizes: a box near 1,000 px in an 800 x 1333 image (few RoIs: it is the slow case).
    big = torch.tensor([[40.0, 12.0, 1033.5, 790.0], [0.0, 0.0, 1333.0, 800.0]])
    _assert_equal_keypoints(torch.randn(2, 3, 56, 56, generator=g), big, (800, 1333))


def test_static_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(21)
    rois = _rois(10, (120, 200), g)
    maps = torch.randn(10, 17, 56, 56, generator=g) * 3
    points, scores = heatmaps_to_keypoints_static(maps, rois, (120, 200))
    t_points, t_scores = tv_roi_heads.heatmaps_to_keypoints(maps, rois)
    torch.testing.assert_close(points, t_points, atol=1e-3, rtol=0)
    torch.testing.assert_close(scores, t_scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("chunk_elements", [1, 5_000, 200_000])
def test_chunking_changes_nothing(chunk_elements: int) -> None:
    """From one row and one keypoint per step to all at once: the same keypoints (the first maximum
    across steps too) and the same scores."""
    g = torch.Generator().manual_seed(3)
    rois = _rois(6, (40, 50), g)
    maps = torch.randn(6, 4, 8, 8, generator=g)
    whole = heatmaps_to_keypoints_static(maps, rois, (40, 50), chunk_elements=10**9)
    chunked = heatmaps_to_keypoints_static(maps, rois, (40, 50), chunk_elements=chunk_elements)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    _assert_equal_keypoints(maps, rois, (40, 50), chunk_elements=chunk_elements)


def test_ties_take_the_first_maximum_as_eager() -> None:
    rois = torch.tensor([[0.0, 0.0, 112.0, 112.0], [3.0, 4.0, 59.0, 60.0], [1.0, 2.0, 9.0, 30.0]])
    flat = torch.zeros(3, 2, 56, 56)  # every cell equal: the first (top-left) wins
    points, scores = heatmaps_to_keypoints_static(flat, rois, (120, 120))
    assert points[:, :, :2].tolist() == heatmaps_to_keypoints(flat, rois)[0][:, :, :2].tolist()
    assert points[0, 0].tolist() == [0.5, 0.5, 1.0] and points[1, 1].tolist() == [3.5, 4.5, 1.0]
    assert scores.abs().max() == 0
    one_row, _ = heatmaps_to_keypoints_static(flat, rois, (120, 120), chunk_elements=1)  # a step a row
    assert one_row.tolist() == points.tolist()  # a later step's equal maximum does not win
    # Two equal peaks (the same phase of the 2x resize): the one first in row-major order wins,
    # here the upper one though it is further right, in both forms.
    peaks = torch.zeros(1, 1, 56, 56)
    peaks[0, 0, 10, 40] = peaks[0, 0, 30, 10] = 1.0
    roi = rois[:1]
    eager, _ = heatmaps_to_keypoints(peaks, roi)
    static, _ = heatmaps_to_keypoints_static(peaks, roi, (112, 112))
    assert static.tolist() == eager.tolist()
    assert 80 < static[0, 0, 0] < 82 and 20 < static[0, 0, 1] < 22  # cell (10, 40) at 2x


def test_no_rois_and_float64() -> None:
    points, scores = heatmaps_to_keypoints_static(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4), (64, 64))
    assert points.shape == (0, 17, 3) and scores.shape == (0, 17) and points.dtype == torch.float32
    g = torch.Generator().manual_seed(5)
    rois = _rois(4, (30, 30), g).double()
    maps = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64)
    s_points, s_scores = heatmaps_to_keypoints_static(maps, rois, (30, 30))
    points, scores = heatmaps_to_keypoints(maps, rois)
    assert s_points.dtype == s_scores.dtype == torch.float64
    torch.testing.assert_close(s_points, points, atol=1e-9, rtol=0)
    torch.testing.assert_close(s_scores, scores, atol=1e-9, rtol=0)


def test_scores_have_gradients() -> None:
    g = torch.Generator().manual_seed(6)
    maps = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[1.0, 2.0, 8.0, 7.5], [0.0, 0.0, 3.3, 4.0]], dtype=torch.float64)
    torch.autograd.gradcheck(lambda m: heatmaps_to_keypoints_static(m, rois, (9, 9))[1], (maps,))


class _Keypoints(torch.nn.Module):
    def forward(self, maps: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return heatmaps_to_keypoints(maps, rois, max_size=(48, 64))


def test_exports_with_a_dynamic_number_of_rois() -> None:
    """torch.export traces the static form (any number of RoIs, zero included) and its program
    gives the eager keypoints."""
    g = torch.Generator().manual_seed(8)
    maps, rois = torch.randn(5, 3, 14, 14, generator=g), _rois(5, (48, 64), g)
    q = torch.export.Dim("q", min=0, max=1000)
    program = torch.export.export(_Keypoints(), (maps, rois), dynamic_shapes=({0: q}, {0: q}), strict=False)
    module = program.module()
    for n in (0, 1, 9):
        maps, rois = torch.randn(n, 3, 14, 14, generator=g), _rois(n, (48, 64), g)
        points, scores = module(maps, rois)
        e_points, e_scores = heatmaps_to_keypoints(maps, rois)
        assert points.shape == (n, 3, 3)
        torch.testing.assert_close(points, e_points, atol=1e-3, rtol=0)
        torch.testing.assert_close(scores, e_scores, atol=1e-4, rtol=0)


def test_bad_inputs_are_value_errors() -> None:
    rois = torch.tensor([[0.0, 0.0, 30.0, 20.0]])
    with pytest.raises(ValueError, match=r"a RoI of 20 x 30 px exceeds max_size \(20, 29\)"):
        heatmaps_to_keypoints_static(torch.zeros(1, 1, 8, 8), rois, (20, 29))
    with pytest.raises(ValueError, match="max_size must be two sides >= 1 px"):
        heatmaps_to_keypoints_static(torch.zeros(1, 1, 8, 8), rois, (0, 30))
    with pytest.raises(ValueError, match=r"maps must be Tensor\[Q, K, M, M\]"):
        heatmaps_to_keypoints_static(torch.zeros(1, 1, 8, 9), rois, (20, 30))
    with pytest.raises(ValueError, match="2 RoIs in maps but 1 rois"):
        heatmaps_to_keypoints_static(torch.zeros(2, 1, 8, 8), rois, (20, 30))


def test_export_without_a_bound_is_a_clear_error() -> None:
    class NoBound(torch.nn.Module):
        def forward(self, maps: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return heatmaps_to_keypoints(maps, rois)

    with pytest.raises(ValueError, match="under torch.export needs max_size"):
        torch.export.export(NoBound(), (torch.zeros(2, 1, 8, 8), torch.ones(2, 4)), strict=False)
