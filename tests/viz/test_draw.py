"""Pictures: pixel-level checks of boxes, masks, label maps, flow and depth colouring, grids, PNGs.

References are written here from the definitions: a box outline is the set of pixels within
``width`` of the box's inclusive pixel border; a mask blend is ``round((1 - a) * x + a * c)``;
the flow colouring is Middlebury's ``computeColor`` written out per pixel in plain Python.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data.records import Categories
from structpred.viz import (
    colormap_lut,
    depth_to_color,
    distinct_color,
    draw_boxes,
    draw_label_map,
    draw_masks,
    flow_color_wheel,
    flow_to_color,
    make_grid,
    overlay_label_map,
    parse_color,
    save_png,
    to_uint8_image,
    voc_palette,
)

RED = (255, 0, 0)


def rand_image(h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def outline_mask(h: int, w: int, px1: int, py1: int, px2: int, py2: int, width: int) -> torch.Tensor:
    """bool[H, W]: pixels of the inclusive rectangle [px1, px2] x [py1, py2] within `width` of its border."""
    m = torch.zeros(h, w, dtype=torch.bool)
    for y in range(py1, py2 + 1):
        for x in range(px1, px2 + 1):
            if min(x - px1, px2 - x, y - py1, py2 - y) < width:
                m[y, x] = True
    return m


def pixel(img: torch.Tensor, y: int, x: int) -> tuple[int, ...]:
    return tuple(img[:, y, x].tolist())


# ----------------------------------------------------------------------------- colours


def test_parse_color_forms_and_errors():
    assert parse_color("red") == RED
    assert parse_color("#00ff80") == (0, 255, 128)
    assert parse_color((1, 2, 3)) == (1, 2, 3)
    assert parse_color(torch.tensor([4, 5, 6])) == (4, 5, 6)
    for bad in ("not-a-colour", (1, 2), (0, 0, 256), 5):
        with pytest.raises(ValueError, match="color"):
            parse_color(bad)  # type: ignore[arg-type]


def test_voc_palette_known_entries():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == torch.uint8
    known = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        7: (128, 128, 128),
        8: (64, 0, 0),
        15: (192, 128, 128),  # person
        20: (0, 64, 128),  # tvmonitor
        255: (224, 224, 192),  # the colour VOC's PNGs use for "void"
    }
    for k, rgb in known.items():
        assert tuple(pal[k].tolist()) == rgb, k
    assert len({tuple(c) for c in pal.tolist()}) == 256  # all distinct


def test_distinct_colors_differ_for_neighbours():
    colors = [distinct_color(i) for i in range(20)]
    assert len(set(colors)) == 20
    for a, b in zip(colors[:-1], colors[1:], strict=True):
        assert sum(abs(x - y) for x, y in zip(a, b, strict=True)) > 60


def test_flow_color_wheel_segments():
    wheel = flow_color_wheel()
    assert wheel.shape == (55, 3) and wheel.dtype == torch.uint8
    # The first row of each segment (RY 15, YG 6, GC 4, CB 11, BM 13, MR 6) is a pure hue.
    starts = {
        0: (255, 0, 0),
        15: (255, 255, 0),
        21: (0, 255, 0),
        25: (0, 255, 255),
        36: (0, 0, 255),
        49: (255, 0, 255),
    }
    for row, rgb in starts.items():
        assert tuple(wheel[row].tolist()) == rgb, row
    assert tuple(wheel[1].tolist()) == (255, 17, 0)  # floor(255 / 15)
    assert tuple(wheel[54].tolist()) == (255, 0, 255 - 212)  # floor(255 * 5 / 6) = 212


# ----------------------------------------------------------------------------- images


def test_to_uint8_image_float_grey_and_errors():
    f = torch.tensor([[[0.0, 0.5, 1.0, 2.0, -1.0]]])  # (1, 1, 5): grey, with out-of-range values
    out = to_uint8_image(f)
    assert out.shape == (3, 1, 5) and out.dtype == torch.uint8
    assert out[0, 0].tolist() == [0, 128, 255, 255, 0]
    assert torch.equal(out[0], out[2])
    with pytest.raises(ValueError, match="image"):
        to_uint8_image(torch.zeros(4, 5, 5))
    with pytest.raises(ValueError, match="image"):
        to_uint8_image(torch.zeros(3, 5, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="image"):
        to_uint8_image(np.zeros((3, 5, 5)))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("width", [1, 2])
def test_box_outline_pixels_exact(width):
    img = torch.zeros(3, 20, 30, dtype=torch.uint8)
    out = draw_boxes(img, torch.tensor([[5.0, 4.0, 15.0, 12.0]]), colors=RED, width=width)
    # Box [5, 15) x [4, 12) covers columns 5..14 and rows 4..11.
    edge = outline_mask(20, 30, 5, 4, 14, 11, width)
    expected = torch.zeros_like(img)
    expected[0][edge] = 255
    assert torch.equal(out, expected)
    assert img.sum() == 0  # input untouched


def test_box_float_image_gives_same_pixels_as_uint8():
    img = rand_image()
    boxes = torch.tensor([[2.0, 3.0, 20.0, 15.0]])
    a = draw_boxes(img, boxes, colors="lime", width=1)
    b = draw_boxes(img.float() / 255, boxes, colors="lime", width=1)
    assert torch.equal(a, b)
    inside = outline_mask(24, 32, 3, 4, 18, 13, 100)  # strictly inside the outline
    assert torch.equal(a[:, inside], img[:, inside])


def test_boxes_partly_outside_are_clipped_and_outside_skipped():
    img = torch.zeros(3, 20, 30, dtype=torch.uint8)
    boxes = torch.tensor([[-10.0, -5.0, 10.0, 8.0], [40.0, 2.0, 50.0, 9.0], [3.0, 25.0, 9.0, 30.0]])
    out = draw_boxes(img, boxes, colors=RED, width=1)
    expected = torch.zeros_like(img)
    expected[0][outline_mask(20, 30, 0, 0, 9, 7, 1)] = 255  # clipped to [0, 10) x [0, 8)
    assert torch.equal(out, expected)
    # A box running past the right and bottom edges has its outline on the last row/column.
    out = draw_boxes(img, torch.tensor([[25.0, 15.0, 99.0, 99.0]]), colors=RED, width=1)
    assert pixel(out, 19, 27) == RED and pixel(out, 17, 29) == RED and pixel(out, 17, 27) == (0, 0, 0)


def test_zero_boxes_returns_uint8_copy():
    img = rand_image().float() / 255
    out = draw_boxes(img, torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64), scores=torch.zeros(0))
    assert out.dtype == torch.uint8 and torch.equal(out, to_uint8_image(img))


def test_default_colors_follow_labels():
    img = torch.zeros(3, 40, 60, dtype=torch.uint8)
    boxes = torch.tensor([[2.0, 2.0, 18.0, 18.0], [22.0, 2.0, 38.0, 18.0], [42.0, 22.0, 58.0, 38.0]])
    out = draw_boxes(img, boxes, labels=torch.tensor([3, 3, 5]), width=1)
    # Bottom edges (no caption there) carry the class colour.
    assert pixel(out, 17, 10) == pixel(out, 17, 30) == distinct_color(3)
    assert pixel(out, 37, 50) == distinct_color(5) != distinct_color(3)
    # Per-box colours override.
    out = draw_boxes(img, boxes, colors=["red", (0, 0, 255), "#00ff00"], width=1)
    assert [pixel(out, 17, 10), pixel(out, 17, 30), pixel(out, 37, 50)] == [RED, (0, 0, 255), (0, 255, 0)]


def test_caption_above_box_when_room_else_below_else_left_out():
    img = torch.zeros(3, 60, 80, dtype=torch.uint8)
    names = Categories(["cat", "dog"])
    box_low = torch.tensor([[10.0, 30.0, 70.0, 55.0]])
    out = draw_boxes(img, box_low, torch.tensor([2]), torch.tensor([0.87]), names, colors=RED, width=1,
                     font_size=11)  # fmt: skip
    above = out[:, :30, :]
    assert (above != 0).any()  # the tag is above the box
    tag = above[:, :, 10:]
    assert (tag == torch.tensor(RED, dtype=torch.uint8)[:, None, None]).all(0).sum() > 20  # tag fill
    assert (tag > 200).all(0).sum() > 10  # white (anti-aliased) ink on red
    interior = out[:, 31:54, 11:69]
    assert interior.sum() == 0
    # At the top of the image there is no room above: the tag goes below the box, not inside.
    top_box = torch.tensor([[10.0, 0.0, 70.0, 30.0]])
    out = draw_boxes(img, top_box, torch.tensor([1]), class_names=["cat", "x"], width=1)
    assert out[:, 1:29, 11:69].sum() == 0  # the object is not covered
    assert (out[:, 30:45, 10:40] != 0).any()  # the tag is just below
    # A box filling the image's height: no room above or below, the caption is left out.
    tall = torch.tensor([[10.0, 0.0, 70.0, 60.0]])
    plain = draw_boxes(img, tall, colors=RED, width=1)
    captioned = draw_boxes(img, tall, torch.tensor([1]), class_names=["cat", "x"], colors=RED, width=1)
    assert torch.equal(plain, captioned)


@pytest.mark.parametrize("H, W", [(24, 24), (64, 64), (64, 48), (300, 400), (1080, 1920)])
def test_caption_never_covers_its_box(H, W):
    # The rule on every small box at every position: the tag rectangle and the box never overlap.
    from structpred.viz import caption_font_size, caption_position

    size = caption_font_size(H, W)
    assert 8 <= size <= 22
    tag = (4 * size, size + 2)
    g = torch.Generator().manual_seed(H * W)
    for _ in range(200):
        w, h = (int(v) for v in torch.randint(1, 12, (2,), generator=g))
        x1 = int(torch.randint(0, W - w + 1, (1,), generator=g))
        y1 = int(torch.randint(0, H - h + 1, (1,), generator=g))
        box = (x1, y1, x1 + w - 1, y1 + h - 1)
        where = caption_position(box, tag, (H, W))
        if where is None:
            assert y1 - tag[1] < 0 and box[3] + 1 + tag[1] > H  # no room above or below
            continue
        x, y = where
        assert 0 <= x and x + tag[0] <= max(W, tag[0]) and 0 <= y and y + tag[1] <= H
        rows_overlap = y <= box[3] and box[1] <= y + tag[1] - 1
        assert not rows_overlap, (box, where)


def test_caption_size_scales_with_the_image():
    from structpred.viz import caption_font_size

    assert caption_font_size(64, 64) == 8
    assert caption_font_size(480, 640) == 17
    assert caption_font_size(4000, 6000) == 22
    small = draw_boxes(torch.zeros(3, 64, 64, dtype=torch.uint8), torch.tensor([[8.0, 30.0, 40.0, 60.0]]),
                       torch.tensor([1]), class_names=["cat"], colors=RED, width=1)  # fmt: skip
    big = draw_boxes(torch.zeros(3, 640, 640, dtype=torch.uint8), torch.tensor([[80.0, 300.0, 400.0, 600.0]]),
                     torch.tensor([1]), class_names=["cat"], colors=RED, width=1)  # fmt: skip
    tag_rows = lambda out, y: int((out[0, :y] == 255).any(1).sum())  # noqa: E731
    assert tag_rows(big, 300) > 2 * tag_rows(small, 30)


def test_captions_differ_by_name_and_score():
    img = torch.zeros(3, 40, 80, dtype=torch.uint8)
    box = torch.tensor([[5.0, 20.0, 75.0, 38.0]])
    a = draw_boxes(img, box, torch.tensor([1]), torch.tensor([0.5]), ["cat", "dog"], colors=RED)
    b = draw_boxes(img, box, torch.tensor([2]), torch.tensor([0.5]), ["cat", "dog"], colors=RED)
    c = draw_boxes(img, box, torch.tensor([1]), torch.tensor([0.9]), ["cat", "dog"], colors=RED)
    assert not torch.equal(a, b) and not torch.equal(a, c)


def test_score_threshold_skips_low_scores():
    img = torch.zeros(3, 20, 30, dtype=torch.uint8)
    boxes = torch.tensor([[1.0, 10.0, 10.0, 19.0], [15.0, 10.0, 25.0, 19.0]])
    out = draw_boxes(img, boxes, scores=torch.tensor([0.9, 0.1]), colors=RED, width=1, score_threshold=0.5)
    assert pixel(out, 18, 5) == RED  # bottom edge of the kept box
    assert out[:, 12:, 14:].sum() == 0  # no trace of the low-scoring box (its caption row is above)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"boxes": torch.zeros(2, 5)}, "boxes"),
        ({"boxes": torch.zeros(4)}, "boxes"),
        ({"boxes": torch.tensor([[5.0, 5.0, 1.0, 9.0]])}, "boxes"),
        ({"boxes": torch.tensor([[0.0, 0.0, math.nan, 9.0]])}, "boxes"),
        ({"labels": torch.tensor([1, 2])}, "labels"),
        ({"labels": torch.tensor([1.0])}, "labels"),
        ({"scores": torch.tensor([0.1, 0.2])}, "scores"),
        ({"labels": torch.tensor([3]), "class_names": ["a", "b"]}, "labels"),
        ({"colors": ["red", "blue"]}, "colors"),
        ({"colors": "nocolour"}, "colors"),
        ({"score_threshold": 0.5}, "score_threshold"),
        ({"width": 0}, "width"),
        ({"image": torch.zeros(3, 10)}, "image"),
        ({"image": torch.zeros(3, 10, 10, dtype=torch.int32)}, "image"),
    ],
)
def test_draw_boxes_bad_input(kwargs, match):
    args = {"image": torch.zeros(3, 20, 20), "boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        draw_boxes(**args)


# ----------------------------------------------------------------------------- masks and label maps


def test_mask_blend_changes_only_masked_pixels():
    img = rand_image(16, 20, seed=1)
    masks = torch.zeros(2, 16, 20, dtype=torch.uint8)
    masks[0, 2:8, 3:12] = 1
    masks[1, 6:14, 10:18] = 1  # overlaps mask 0
    colors = [(255, 0, 0), (0, 0, 255)]
    alpha = 0.3
    out = draw_masks(img, masks, colors=colors, alpha=alpha)
    expected = img.double()
    for m, c in zip(masks.bool(), colors, strict=True):
        col = torch.tensor(c, dtype=torch.float64)[:, None]
        expected[:, m] = (expected[:, m] * (1 - alpha) + col * alpha).round()
    assert torch.equal(out, expected.to(torch.uint8))
    outside = ~(masks.bool().any(0))
    assert torch.equal(out[:, outside], img[:, outside])
    assert not torch.equal(out[:, ~outside], img[:, ~outside])


def test_mask_alpha_extremes_and_bool_masks():
    img = rand_image(8, 8, seed=2)
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 1:4, 1:4] = True
    assert torch.equal(draw_masks(img, masks, colors="red", alpha=0.0), img)
    out = draw_masks(img, masks, colors="red", alpha=1.0)
    assert (out[:, masks[0]] == torch.tensor(RED, dtype=torch.uint8)[:, None]).all()
    assert torch.equal(draw_masks(img, torch.zeros(0, 8, 8, dtype=torch.bool)), img)


@pytest.mark.parametrize(
    "masks, kwargs, match",
    [
        (torch.zeros(1, 8, 8), {}, "masks"),  # float
        (torch.zeros(1, 8, 9, dtype=torch.bool), {}, "masks"),
        (torch.zeros(8, 8, dtype=torch.bool), {}, "masks"),
        (torch.zeros(1, 8, 8, dtype=torch.bool), {"alpha": 1.5}, "alpha"),
        (torch.zeros(2, 8, 8, dtype=torch.bool), {"colors": ["red"]}, "colors"),
    ],
)
def test_draw_masks_bad_input(masks, kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_masks(rand_image(8, 8), masks, **kwargs)


def test_label_map_colours_equal_palette_and_ignore_is_white():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 21, (12, 14), generator=g)
    labels[0, :5] = 255
    out = draw_label_map(labels)
    pal = voc_palette()
    for y in range(12):
        for x in range(14):
            want = (255, 255, 255) if labels[y, x] == 255 else tuple(pal[labels[y, x]].tolist())
            assert pixel(out, y, x) == want
    custom = draw_label_map(
        torch.tensor([[0, 1], [2, 9]]),
        palette=["black", "red", (0, 0, 255)],
        ignore_index=9,
        ignore_color="black",
    )
    assert [pixel(custom, 0, 1), pixel(custom, 1, 0), pixel(custom, 1, 1)] == [RED, (0, 0, 255), (0, 0, 0)]


@pytest.mark.parametrize(
    "labels, kwargs, match",
    [
        (torch.tensor([[0, 21]]), {"palette": voc_palette(21)}, "labels"),
        (torch.tensor([[-1, 0]]), {}, "labels"),
        (torch.tensor([[255, 0]]), {"ignore_index": None, "palette": voc_palette(21)}, "labels"),
        (torch.zeros(1, 2, 2, dtype=torch.int64), {}, "labels"),
        (torch.zeros(2, 2), {}, "labels"),  # float
        (torch.zeros(2, 2, dtype=torch.int64), {"palette": torch.zeros(4, 4)}, "palette"),
    ],
)
def test_draw_label_map_bad_input(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_label_map(labels, **kwargs)


def test_overlay_label_map_blends_foreground_only():
    img = rand_image(10, 12, seed=4)
    labels = torch.zeros(10, 12, dtype=torch.int64)
    labels[2:6, 3:9] = 15
    labels[7:9, 1:4] = 255
    out = overlay_label_map(img, labels, alpha=0.4)
    fg = labels == 15
    col = voc_palette()[15].double()[:, None]
    assert torch.equal(out[:, fg], (img[:, fg].double() * 0.6 + col * 0.4).round().to(torch.uint8))
    assert torch.equal(out[:, ~fg], img[:, ~fg])  # background and ignore untouched
    with pytest.raises(ValueError, match="labels"):
        overlay_label_map(img, torch.zeros(10, 11, dtype=torch.int64))


# ----------------------------------------------------------------------------- flow


def naive_flow_color(u: float, v: float, max_rad: float) -> tuple[int, int, int]:
    """Middlebury computeColor for one (already valid) vector, in plain Python."""
    wheel = flow_color_wheel().tolist()
    ncols = len(wheel)
    eps = 2.220446049250313e-16
    u, v = u / (max_rad + eps), v / (max_rad + eps)
    rad = math.hypot(u, v)
    a = math.atan2(-v, -u) / math.pi
    if a >= 1.0:
        a = -1.0
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = int(math.floor(fk))
    k1 = (k0 + 1) % ncols
    f = fk - k0
    rgb = []
    for i in range(3):
        col = (1 - f) * wheel[k0][i] / 255 + f * wheel[k1][i] / 255
        col = 1 - rad * (1 - col) if rad <= 1 else col * 0.75
        rgb.append(int(math.floor(255 * col)))
    return rgb[0], rgb[1], rgb[2]


def test_flow_matches_naive_reference():
    g = torch.Generator().manual_seed(5)
    flow = torch.randn(2, 9, 11, generator=g, dtype=torch.float64) * 4
    out = flow_to_color(flow)
    max_rad = float(flow.norm(dim=0).max())
    for y in range(9):
        for x in range(11):
            want = naive_flow_color(float(flow[0, y, x]), float(flow[1, y, x]), max_rad)
            got = pixel(out, y, x)
            assert all(abs(a - b) <= 1 for a, b in zip(got, want, strict=True)), (y, x, got, want)


def test_flow_zero_is_white_and_plus_x_is_wheel_start():
    assert (flow_to_color(torch.zeros(2, 3, 4)) == 255).all()
    assert (flow_to_color(torch.zeros(2, 3, 4), max_flow=5.0) == 255).all()
    flow = torch.zeros(2, 1, 3)
    flow[0] = torch.tensor([3.0, 3.0, 0.0])
    flow[1] = torch.tensor([0.0, -0.0, 0.0])  # +x with both signs of zero
    out = flow_to_color(flow)
    assert pixel(out, 0, 0) == pixel(out, 0, 1) == tuple(flow_color_wheel()[0].tolist()) == RED
    assert pixel(out, 0, 2) == (255, 255, 255)


def test_flow_directions_and_magnitude():
    # Four unit vectors: +x, +y (down), -x, -y (up).
    flow = torch.tensor([[[1.0, 0.0, -1.0, 0.0]], [[0.0, 1.0, 0.0, -1.0]]])
    out = flow_to_color(flow)
    right, down, left, up = (pixel(out, 0, i) for i in range(4))
    assert len({right, down, left, up}) == 4
    assert right == RED
    assert left[0] < 10 and left[1] > 150 and left[2] == 255  # cyan-blue, opposite red
    assert up[2] == 255 and up[1] < 10  # blue-magenta
    assert down[0] == 255 and down[2] < 10 and down[1] > 200  # orange-yellow
    # Half the maximum magnitude: same hue, halfway to white.
    half = flow_to_color(torch.tensor([[[1.0, 0.5]], [[0.0, 0.0]]]))
    assert pixel(half, 0, 1) == (255, 127, 127)
    # Longer than max_flow: the wheel colour at 75 %.
    beyond = flow_to_color(torch.tensor([[[4.0]], [[0.0]]]), max_flow=2.0)
    assert pixel(beyond, 0, 0) == (191, 0, 0)


def test_flow_invalid_is_black_and_ignored_for_normalisation():
    flow = torch.tensor([[[1.0, math.nan, math.inf, 2e9, 0.5]], [[0.0, 0.0, 0.0, 0.0, math.nan]]])
    out = flow_to_color(flow)
    assert pixel(out, 0, 0) == RED  # max over valid pixels only
    for x in range(1, 5):
        assert pixel(out, 0, x) == (0, 0, 0)


@pytest.mark.parametrize(
    "flow, kwargs, match",
    [
        (torch.zeros(3, 4, 4), {}, "flow"),
        (torch.zeros(4, 4, 2), {}, "flow"),
        (torch.zeros(2, 4, 4, dtype=torch.int64), {}, "flow"),
        (torch.zeros(2, 4, 4), {"max_flow": 0.0}, "max_flow"),
        (torch.zeros(2, 4, 4), {"max_flow": math.inf}, "max_flow"),
    ],
)
def test_flow_bad_input(flow, kwargs, match):
    with pytest.raises(ValueError, match=match):
        flow_to_color(flow, **kwargs)


# ----------------------------------------------------------------------------- depth


@pytest.mark.parametrize("cmap", ["magma", "turbo"])
def test_depth_ramp_walks_the_colormap(cmap):
    depth = torch.linspace(1.0, 10.0, 256).reshape(1, 1, 256)
    out = depth_to_color(depth, cmap=cmap)
    ref = np.round(matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    assert np.array_equal(out[:, 0, :].t().numpy(), ref)
    assert torch.equal(depth_to_color(depth[0], cmap=cmap), out)  # [H, W] works too
    inv = depth_to_color(depth, cmap=cmap, invert=True)
    assert torch.equal(inv, out.flip(-1))


def test_depth_magma_brightness_is_monotone():
    out = depth_to_color(torch.linspace(0.5, 3.0, 64).reshape(1, 64)).double()
    luma = 0.299 * out[0, 0] + 0.587 * out[1, 0] + 0.114 * out[2, 0]
    assert (luma[1:] >= luma[:-1] - 0.5).all() and luma[-1] > luma[0] + 200


def test_depth_vmin_vmax_clamp_and_invalid_black():
    depth = torch.tensor([[1.0, 2.0, 3.0, 5.0, 0.0, -1.0, math.nan, math.inf]])
    lut = colormap_lut("magma")
    out = depth_to_color(depth, vmin=2.0, vmax=3.0)
    assert pixel(out, 0, 0) == pixel(out, 0, 1) == tuple(lut[0].tolist())  # below vmin clamps
    assert pixel(out, 0, 2) == pixel(out, 0, 3) == tuple(lut[-1].tolist())
    for x in range(4, 8):
        assert pixel(out, 0, x) == (0, 0, 0)
    auto = depth_to_color(depth)  # range from the valid pixels: 1 .. 5
    assert pixel(auto, 0, 0) == tuple(lut[0].tolist()) and pixel(auto, 0, 3) == tuple(lut[-1].tolist())
    assert (depth_to_color(torch.zeros(3, 3)) == 0).all()
    assert (depth_to_color(torch.full((2, 2), 4.0)) == lut[0][:, None, None]).all()


@pytest.mark.parametrize(
    "depth, kwargs, match",
    [
        (torch.ones(2, 4, 4), {}, "depth"),
        (torch.ones(1, 1, 4, 4), {}, "depth"),
        (torch.ones(4, 4, dtype=torch.int64), {}, "depth"),
        (torch.ones(4, 4), {"cmap": "no_such_map"}, "cmap"),
        (torch.ones(4, 4), {"vmin": 3.0, "vmax": 1.0}, "vmin"),
    ],
)
def test_depth_bad_input(depth, kwargs, match):
    with pytest.raises(ValueError, match=match):
        depth_to_color(depth, **kwargs)


# ----------------------------------------------------------------------------- files and grids


def test_save_png_round_trip(tmp_path):
    img = rand_image(7, 9, seed=6)
    path = save_png(tmp_path / "sub" / "a.png", img)
    with Image.open(path) as pil:
        assert pil.size == (9, 7) and pil.mode == "RGB"
        back = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
    assert torch.equal(back, img)
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "b.png", img.float())
    with pytest.raises(ValueError, match="image"):
        save_png(tmp_path / "b.png", img[0])
    with pytest.raises(ValueError, match="png"):
        save_png(tmp_path / "b.jpg", img)


def test_make_grid_layout():
    a = torch.full((3, 4, 6), 10, dtype=torch.uint8)
    b = torch.full((3, 2, 2), 1.0)  # float, smaller: centred in its cell
    c = torch.full((3, 4, 6), 30, dtype=torch.uint8)
    grid = make_grid([a, b, c], nrow=2, padding=1, pad_value="red")
    assert grid.shape == (3, 1 + 2 * (4 + 1), 1 + 2 * (6 + 1))
    assert torch.equal(grid[:, 1:5, 1:7], a)
    assert (grid[:, 2:4, 10:12] == 255).all()  # b at the centre of cell (0, 1): top 1 + 1, left 8 + 2
    assert pixel(grid, 1, 8) == RED  # b's cell margin is padding colour
    assert torch.equal(grid[:, 6:10, 1:7], c)
    assert pixel(grid, 0, 0) == RED and pixel(grid, 7, 10) == RED  # empty last cell
    batched = make_grid(torch.zeros(5, 3, 2, 2), nrow=8, padding=0)
    assert batched.shape == (3, 2, 10)
    for bad, match in (([], "images"), ([torch.zeros(2, 4, 4)], "images"), (torch.zeros(3, 4, 4), "images")):
        with pytest.raises(ValueError, match=match):
            make_grid(bad)
    with pytest.raises(ValueError, match="nrow"):
        make_grid([a], nrow=0)
