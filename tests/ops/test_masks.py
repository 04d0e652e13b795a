"""``structpred.ops.paste_masks_in_image`` against a naive per-pixel loop, gradcheck, bad input;
``masks_to_boxes`` against a naive loop and torchvision's (at the end of the file).

No torchvision for the paste (that is ``tests/parity/test_mask_rcnn_parity.py``). The reference is a
plain loop over masks and image pixels, written from the documented semantics: pad the mask,
scale the box about its centre by ``Mp / M``, truncate its corners to ints, the box spans
``x2 - x1 + 1`` pixels; pixel ``d`` of the box reads the padded mask bilinearly at
``max((d + 0.5) * Mp / size - 0.5, 0)`` (``align_corners=False``), the upper neighbour
clamped to the last cell.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from structpred.ops import masks_to_boxes, paste_masks_in_image


def _taps(d: int, size: int, source: int) -> tuple[int, int, float]:
    """Source cells and the upper one's weight of pixel ``d`` of a ``size``-long resized axis."""
    s = max((d + 0.5) * source / size - 0.5, 0.0)
    low = min(math.floor(s), source - 1)
    high = low + 1 if low < source - 1 else low
    return low, high, min(max(s - low, 0.0), 1.0)


def naive_paste(masks: np.ndarray, boxes: np.ndarray, H: int, W: int, padding: int) -> np.ndarray:
    N, M = masks.shape[0], masks.shape[-1]
    Mp = M + 2 * padding
    out = np.zeros((N, 1, H, W))
    for n in range(N):
        p = np.pad(masks[n, 0], padding)
        x1, y1, x2, y2 = boxes[n]
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2 * Mp / M, (y2 - y1) / 2 * Mp / M
        bx1, by1, bx2, by2 = (int(v) for v in (cx - hw, cy - hh, cx + hw, cy + hh))  # towards zero
        w, h = max(bx2 - bx1 + 1, 1), max(by2 - by1 + 1, 1)
        for y in range(H):
            for x in range(W):
                dy, dx = y - by1, x - bx1
                if not (0 <= dy < h and 0 <= dx < w):
                    continue
                y0, y1_, ly = _taps(dy, h, Mp)
                x0, x1_, lx = _taps(dx, w, Mp)
                top = (1 - lx) * p[y0, x0] + lx * p[y0, x1_]
                bottom = (1 - lx) * p[y1_, x0] + lx * p[y1_, x1_]
                out[n, 0, y, x] = (1 - ly) * top + ly * bottom
    return out


def _inputs(n: int, H: int, W: int, M: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, 1, M, M, generator=g, dtype=torch.float64)
    centre = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([W, H])
    size = torch.exp(torch.rand(n, 2, generator=g, dtype=torch.float64) * 3.5) * 0.3  # 0.3 .. 10 px
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    boxes[0] = torch.tensor([0.0, 0.0, W, H])  # the whole image
    boxes[1] = torch.tensor([-4.2, 3.0, 5.5, H + 6.0])  # over the borders
    return masks, boxes


@pytest.mark.parametrize(("M", "padding"), [(6, 1), (5, 0), (4, 2), (28, 1)])
def test_paste_matches_the_naive_loop(M: int, padding: int) -> None:
    H, W = 13, 17
    masks, boxes = _inputs(7, H, W, M, seed=M)
    got = paste_masks_in_image(masks, boxes, (H, W), padding=padding)
    want = naive_paste(masks.numpy(), boxes.numpy(), H, W, padding)
    assert got.shape == (7, 1, H, W) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_paste_float32_and_an_all_ones_mask() -> None:
    masks = torch.ones(1, 1, 28, 28)
    boxes = torch.tensor([[10.0, 5.0, 40.0, 25.0]])
    got = paste_masks_in_image(masks, boxes, (30, 50))[0, 0]
    assert got.dtype == torch.float32
    assert torch.all(got[8:22, 13:37] == 1.0)  # well inside the box: all ones
    assert float(got[:, :8].abs().sum()) == 0 and float(got[:3].abs().sum()) == 0  # outside: 0


def test_paste_no_masks() -> None:
    assert paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (7, 9)).shape == (0, 1, 7, 9)


def test_paste_gradcheck() -> None:
    masks, boxes = _inputs(3, 9, 11, 5, seed=3)
    masks.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: paste_masks_in_image(m, boxes, (9, 11)), (masks,))


@pytest.mark.parametrize(
    ("masks", "boxes", "size", "message"),
    [
        (torch.rand(2, 5, 5), torch.zeros(2, 4), (9, 9), r"Tensor\[N, 1, M, M\]"),
        (torch.rand(2, 2, 5, 5), torch.zeros(2, 4), (9, 9), r"Tensor\[N, 1, M, M\]"),
        (torch.rand(2, 1, 5, 4), torch.zeros(2, 4), (9, 9), "square"),
        (torch.ones(2, 1, 5, 5, dtype=torch.uint8), torch.zeros(2, 4), (9, 9), "floating point"),
        (torch.rand(2, 1, 5, 5), torch.zeros(2, 5), (9, 9), r"boxes must have shape"),
        (torch.rand(2, 1, 5, 5), torch.zeros(3, 4), (9, 9), "2 masks but 3 boxes"),
        (torch.rand(2, 1, 5, 5), torch.zeros(2, 4), (0, 9), "image_size must be a positive"),
    ],
)  # fmt: skip
def test_paste_bad_input_is_a_clear_value_error(
    masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        paste_masks_in_image(masks, boxes, size)


def _small_boxes(n: int, H: int, W: int, M: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes small against the image (the windowed path): inside, over each border, fully outside."""
    masks, boxes = _inputs(n, H, W, M, seed=seed)
    boxes[0] = torch.tensor([-3.7, -2.2, 2.5, 3.1])  # over the top-left corner
    boxes[1] = torch.tensor([W - 2.5, H - 3.0, W + 3.9, H + 1.5])  # over the bottom-right corner
    boxes[2] = torch.tensor([W + 5.0, 1.0, W + 9.0, 4.0])  # right of the image
    boxes[3] = torch.tensor([2.0, 3.0, 2.0, 3.0])  # empty box (one pixel after scaling)
    return masks, boxes


@pytest.mark.parametrize(("M", "padding"), [(6, 1), (5, 0), (28, 1)])
def test_paste_windowed_path_matches_the_naive_loop_and_the_dense_path(
    M: int, padding: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structpred.ops import masks as masks_mod

    H, W = 23, 29
    masks, boxes = _small_boxes(9, H, W, M, seed=M + 10)
    calls: list[tuple[int, int]] = []
    real = masks_mod._paste_window

    def spy(*args: Any) -> torch.Tensor:
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(masks_mod, "_paste_window", spy)
    got = paste_masks_in_image(masks, boxes, (H, W), padding=padding)
    assert calls and calls[0][0] * calls[0][1] < H * W  # the windowed path ran, in a smaller window
    want = naive_paste(masks.numpy(), boxes.numpy(), H, W, padding)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    monkeypatch.setattr(masks_mod, "WINDOW_FRACTION", 0.0)  # force the dense products
    dense = paste_masks_in_image(masks, boxes, (H, W), padding=padding)
    assert len(calls) == 1 and got.shape == dense.shape == (9, 1, H, W)
    torch.testing.assert_close(got, dense, rtol=0, atol=1e-12)


def test_paste_windowed_gradcheck() -> None:
    masks, boxes = _small_boxes(4, 15, 19, 3, seed=5)
    masks.requires_grad_(True)
    paste = lambda m: paste_masks_in_image(m, boxes, (15, 19))  # noqa: E731
    assert torch.autograd.gradcheck(paste, (masks,), fast_mode=True)


# ---------------------------------------------------------------------------- masks_to_boxes


def naive_masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """First and last (inclusive) nonzero column and row per mask; (0, 0, 0, 0) when empty."""
    out = []
    for m in masks.tolist():
        pixels = [(y, x) for y, row in enumerate(m) for x, v in enumerate(row) if v]
        if not pixels:
            out.append([0.0, 0.0, 0.0, 0.0])
            continue
        ys, xs = [p[0] for p in pixels], [p[1] for p in pixels]
        out.append([min(xs), min(ys), max(xs), max(ys)])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def _mask_cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    blobs = torch.rand(6, 17, 23, generator=g) < 0.05
    blobs[2] = False  # an empty mask among full ones
    one_pixel = torch.zeros(3, 9, 7, dtype=torch.uint8)
    one_pixel[0, 0, 0] = one_pixel[1, 8, 6] = one_pixel[2, 4, 3] = 1  # corners and middle
    lines = torch.zeros(2, 6, 8)
    lines[0, 3, 1:6] = 0.5  # one row: y1 = y2
    lines[1, :, 7] = -2.0  # one column (nonzero counts, whatever the sign): x1 = x2
    return {
        "random-bool": blobs,
        "random-float": torch.rand(4, 12, 10, generator=g) * (torch.rand(4, 12, 10, generator=g) < 0.1),
        "one-pixel-uint8": one_pixel,
        "row-and-column": lines,
        "full": torch.ones(2, 5, 4, dtype=torch.int64),
        "nan-negative-zero": torch.tensor([[[0.0, -0.0, 0], [0, math.nan, 0]], [[-0.0, 0, -3], [0, 0, 0]]]),
        "all-empty": torch.zeros(3, 8, 8, dtype=torch.bool),
        "1x1": torch.tensor([[[1]], [[0]]], dtype=torch.uint8),
        "one-mask": blobs[:1],
        "no-masks": torch.zeros(0, 8, 8),
    }


MASK_CASES = _mask_cases()


@pytest.mark.parametrize("case", list(MASK_CASES))
def test_masks_to_boxes_matches_naive_and_torchvision(case: str) -> None:
    import torchvision.ops as tv

    masks = MASK_CASES[case]
    got = masks_to_boxes(masks)
    assert got.shape == (masks.shape[0], 4) and got.dtype == torch.float32
    assert torch.equal(got, naive_masks_to_boxes(masks))
    assert torch.equal(got, tv.masks_to_boxes(masks))


def test_masks_to_boxes_zero_sized_masks_give_one_empty_box_each() -> None:
    """Peer difference (documented): torchvision returns no boxes at all for ``[N, 0, W]``."""
    assert torch.equal(masks_to_boxes(torch.ones(3, 0, 5)), torch.zeros(3, 4))
    assert torch.equal(masks_to_boxes(torch.ones(2, 4, 0)), torch.zeros(2, 4))


def test_masks_to_boxes_box_covers_exactly_the_pixels() -> None:
    """Every nonzero pixel lies in [x1, x2] x [y1, y2] and each of the four sides touches one."""
    masks = MASK_CASES["random-bool"]
    for m, (x1, y1, x2, y2) in zip(masks, masks_to_boxes(masks).long().tolist(), strict=True):
        if not m.any():
            continue
        ys, xs = m.nonzero(as_tuple=True)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x1, y1, x2, y2)
        assert m[y1].any() and m[y2].any() and m[:, x1].any() and m[:, x2].any()


@pytest.mark.parametrize("bad", [torch.zeros(5, 5), torch.zeros(1, 2, 5, 5), "mask", np.zeros((2, 4, 4))])
def test_masks_to_boxes_bad_input(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"masks_to_boxes: masks must be a Tensor\[N, H, W\]"):
        masks_to_boxes(bad)
