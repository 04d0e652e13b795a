"""Joint transforms keep geometry true: checked pixel by pixel on shapes-world pairs, clips and
images, exactly where the shapes world is exact (whole-pixel shifts, tight boxes).
"""

from __future__ import annotations

import pytest
import torch

from structpred.data.shapes import ShapesWorld
from structpred.data.shapes_views import ShapesFlow, ShapesStereo, ShapesVideo
from structpred.data.transforms import Compose, HorizontalFlip, RandomCrop, Resize, crop, hflip, resize
from tests.data.view_checks import (
    check_clip_tracks,
    check_flow_pair,
    check_match,
    check_single_item,
    check_stereo_pair,
    grid,
    interior,
    tight_box,
)

SIZE = 64
ITEMS = 4


@pytest.fixture(scope="module")
def flow_items():
    ds = ShapesFlow("train", size=SIZE, num_images=ITEMS, seed=1)
    return [ds[i] for i in range(ITEMS)]


@pytest.fixture(scope="module")
def stereo_items():
    ds = ShapesStereo("train", size=SIZE, num_images=ITEMS, seed=1)
    return [ds[i] for i in range(ITEMS)]


@pytest.fixture(scope="module")
def clip_items():
    ds = ShapesVideo("train", size=SIZE, num_images=ITEMS, seed=1, length=6)
    return [ds[i] for i in range(ITEMS)]


@pytest.fixture(scope="module")
def image_items():
    ds = ShapesWorld("train", size=SIZE, num_images=ITEMS, seed=1)
    return [ds[i] for i in range(ITEMS)]


def same_target(a: dict, b: dict, float_close: tuple[str, ...] = ()) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key in float_close:
            assert torch.allclose(a[key], b[key], rtol=1e-6), key
        else:
            assert torch.equal(a[key], b[key]) or torch.allclose(a[key], b[key], equal_nan=True), key


# ---------------------------------------------------------------------------- flow pairs


def test_flow_pair_exact_after_flip_and_crop(flow_items):
    gen = torch.Generator().manual_seed(0)
    for views, target in flow_items:
        assert check_flow_pair(views, target) > 0.5 * SIZE * SIZE
        fv, ft = hflip(views, target)
        assert torch.equal(fv, views.flip(-1))
        assert torch.equal(ft["flow"][0], -target["flow"][0].flip(-1))
        assert torch.equal(ft["flow"][1], target["flow"][1].flip(-1))
        assert check_flow_pair(fv, ft) == int(target["valid"].sum())
        for _ in range(3):
            top, left = (
                int(torch.randint(SIZE - 40 + 1, (), generator=gen)),
                int(torch.randint(17, (), generator=gen)),
            )
            cv, ct = crop(views, target, top, left, 40, 48)
            assert torch.equal(cv, views[:, :, top : top + 40, left : left + 48])
            # Reference: the cropped valid map, minus pixels whose match left the window.
            ys, xs = grid(40, 48)
            flow = target["flow"][:, top : top + 40, left : left + 48]
            assert torch.equal(ct["flow"], flow)  # values unchanged
            inside = (xs + flow[0] >= 0) & (xs + flow[0] < 48) & (ys + flow[1] >= 0) & (ys + flow[1] < 40)
            assert torch.equal(ct["valid"], target["valid"][top : top + 40, left : left + 48] & inside)
            assert check_flow_pair(cv, ct) > 0


def test_flow_pair_resize(flow_items):
    for views, target in flow_items[:2]:
        rv, rt = resize(views, target, 2 * SIZE)
        assert rv.shape == (2, 3, 2 * SIZE, 2 * SIZE)
        # Nearest at pixel centres: each pixel becomes a 2 x 2 block; vectors double.
        for dy in (0, 1):
            for dx in (0, 1):
                assert torch.equal(rt["flow"][:, dy::2, dx::2], 2 * target["flow"])
                assert torch.equal(rt["valid"][:, :][dy::2, dx::2], target["valid"])
        # Bilinear images of a whole-pixel shift stay matched where the 3 x 3 source
        # neighbourhood moves as one (away from motion edges and the border).
        ok = interior(target["valid"], target["flow"])
        ok2 = ok.repeat_interleave(2, 0).repeat_interleave(2, 1)  # (2H, 2W)
        assert check_match(rv[0], rv[1], rt["flow"][0], rt["flow"][1], ok2, atol=1e-6) > SIZE * SIZE
        # A non-integer resize: vectors scale by (sx, sy); valid matches stay inside the image.
        sv, st = Resize((48, 40))(views, target)
        assert sv.shape == (2, 3, 48, 40)
        assert set(st["flow"][0].unique().tolist()) <= {
            v * 40 / 64 for v in target["flow"][0].unique().tolist()
        }
        assert set(st["flow"][1].unique().tolist()) <= {
            v * 48 / 64 for v in target["flow"][1].unique().tolist()
        }
        ys, xs = grid(48, 40)
        tx, ty = xs + st["flow"][0], ys + st["flow"][1]
        landed = (tx >= -0.5) & (tx < 39.5) & (ty >= -0.5) & (ty < 47.5)
        assert bool(landed[st["valid"]].all())


# ---------------------------------------------------------------------------- stereo pairs


def test_stereo_pair_exact_after_swap_flip_and_crop(stereo_items):
    gen = torch.Generator().manual_seed(0)
    for views, target in stereo_items:
        assert check_stereo_pair(views, target) > SIZE * SIZE
        fv, ft = hflip(views, target)
        # new left = flip(old right), new right = flip(old left); disparities swap and mirror.
        assert torch.equal(fv[0], views[1].flip(-1)) and torch.equal(fv[1], views[0].flip(-1))
        assert torch.equal(ft["disparity"], target["disparity_right"].flip(-1))
        assert torch.equal(ft["disparity_right"], target["disparity"].flip(-1))
        assert torch.equal(ft["valid"], target["valid_right"].flip(-1))
        assert float(ft["focal"]) == float(target["focal"])
        check_stereo_pair(fv, ft)
        # Mirroring without the swap breaks the rectified relation: the check would notice.
        with pytest.raises(AssertionError):
            check_stereo_pair(
                views.flip(-1), {k: (v.flip(-1) if v.dim() >= 2 else v) for k, v in target.items()}
            )
        back_v, back_t = hflip(fv, ft)
        assert torch.equal(back_v, views)
        same_target(back_t, target, float_close=("depth",))
        for _ in range(3):
            cv, ct = RandomCrop((48, 40), generator=gen)(views, target)
            assert cv.shape == (2, 3, 48, 40) and ct["disparity"].shape == (1, 48, 40)
            assert set(ct["disparity"].unique().tolist()) <= set(target["disparity"].unique().tolist())
            assert check_stereo_pair(cv, ct) > 0


def test_stereo_pair_resize(stereo_items):
    for views, target in stereo_items[:2]:
        rv, rt = Resize(2 * SIZE)(views, target)
        for key in ("disparity", "disparity_right"):
            assert torch.equal(rt[key][:, ::2, ::2], 2 * target[key])
        assert torch.equal(rt["depth"][:, 1::2, 1::2], target["depth"])  # metres: unchanged
        assert float(rt["focal"]) == 2 * float(target["focal"])
        assert float(rt["baseline"]) == float(target["baseline"])
        assert torch.allclose(rt["focal"] * rt["baseline"] / rt["disparity"], rt["depth"], rtol=1e-5)
        # doffs (the principal points' x offset, px) scales with the width like focal and disparity
        _, with_doffs = Resize(2 * SIZE)(views, {**target, "doffs": torch.tensor(3.0)})
        assert float(with_doffs["doffs"]) == 6.0
        # Bilinear images stay matched away from depth edges and the border.
        zero = torch.zeros(2 * SIZE, 2 * SIZE)
        up = lambda m: m.repeat_interleave(2, 0).repeat_interleave(2, 1)  # noqa: E731
        ok = up(interior(target["valid"], target["disparity"]))
        assert check_match(rv[0], rv[1], -rt["disparity"][0], zero, ok, atol=1e-6) > SIZE * SIZE
        ok_r = up(interior(target["valid_right"], target["disparity_right"]))
        assert check_match(rv[1], rv[0], rt["disparity_right"][0], zero, ok_r, atol=1e-6) > SIZE * SIZE
        # Shrinking: valid left pixels still find their match inside the image.
        _, st = resize(views, target, (32, 24))
        ys, xs = grid(32, 24)
        assert bool((xs - st["disparity"][0] >= -0.5)[st["valid"]].all())
        assert torch.allclose(st["disparity"], st["focal"] * st["baseline"] / st["depth"], rtol=1e-5)


# ---------------------------------------------------------------------------- clips


def test_clip_tracks_stay_tight_after_crop_and_flip(clip_items):
    transform = Compose([RandomCrop(40, generator=3), HorizontalFlip(0.5, generator=4)])
    any_lost = 0
    for frames, target in clip_items:
        check_clip_tracks(target)
        for _ in range(3):
            cf, ct = transform(frames, target)
            assert cf.shape == (6, 3, 40, 40) and ct["instances"].shape == (6, 40, 40)
            check_clip_tracks(ct)
            assert not bool((ct["visible"] & ~target["visible"]).any())  # never gains visibility
            any_lost += int((target["visible"] & ~ct["visible"]).sum())
        ff, ft = hflip(frames, target)
        check_clip_tracks(ft)
        assert torch.equal(ff, frames.flip(-1))
        back_f, back_t = hflip(ff, ft)
        assert torch.equal(back_f, frames)
        same_target(back_t, target)
    assert any_lost > 0


def test_clip_track_cropped_out_becomes_nan(clip_items):
    frames, target = clip_items[0]
    k, t = (int(i) for i in target["visible"].nonzero()[0])
    x1, _, x2, _ = target["tracks"][k, t].tolist()
    left, width = (0, int(x1)) if x1 >= SIZE - x2 else (int(x2), SIZE - int(x2))
    assert width >= 1
    _, ct = crop(frames, target, 0, left, SIZE, width)
    assert not bool(ct["visible"][k, t]) and bool(torch.isnan(ct["tracks"][k, t]).all())
    check_clip_tracks(ct)


def test_clip_resize(clip_items):
    frames, target = clip_items[1]
    rf, rt = resize(frames, target, 2 * SIZE)
    assert rf.shape == (6, 3, 2 * SIZE, 2 * SIZE)
    assert torch.allclose(rt["tracks"], 2 * target["tracks"], equal_nan=True)
    check_clip_tracks(rt)


# ---------------------------------------------------------------------------- single images


def test_single_image_boxes_stay_tight(image_items):
    gen = torch.Generator().manual_seed(5)
    dropped = 0
    for image, target in image_items:
        check_single_item(image, target)
        check_single_item(*resize(image, target, 2 * SIZE))
        check_single_item(*resize(image, target, (96, 80)), atol=1.0)  # upsampling: within a pixel
        fi, ft = hflip(image, target)
        check_single_item(fi, ft)
        assert torch.equal(ft["semantic"], target["semantic"].flip(-1))
        for _ in range(4):
            ci, ct = RandomCrop(32, generator=gen)(image, target)
            check_single_item(ci, ct)
            assert bool(ct["masks"].flatten(1).any(1).all())  # no empty object kept
            assert torch.equal(ct["area"], ct["masks"].flatten(1).sum(1).float())
            n = target["boxes"].shape[0]
            dropped += n - ct["boxes"].shape[0]
            for key in ("labels", "masks", "area", "iscrowd"):
                assert ct[key].shape[0] == ct["boxes"].shape[0]
    assert dropped > 0


def test_single_image_crop_without_masks_clips_boxes():
    image = torch.rand(3, 20, 20)
    target = {
        "boxes": torch.tensor([[2.0, 2.0, 8.0, 8.0], [12.0, 0.0, 18.0, 6.0]]),
        "labels": torch.tensor([1, 2]),
    }
    _, out = crop(image, target, 0, 5, 10, 10)
    assert out["boxes"].tolist() == [[0.0, 2.0, 3.0, 8.0], [7.0, 0.0, 10.0, 6.0]]
    _, out = crop(image, target, 10, 0, 10, 10)  # both boxes end above row 10: dropped
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)
    assert tight_box(torch.ones(2, 3, dtype=torch.bool)) == [0.0, 0.0, 3.0, 2.0]


# ---------------------------------------------------------------------------- randomness and errors


def test_randomness_is_explicit(flow_items):
    views, target = flow_items[0]
    state = torch.get_rng_state()
    a = [RandomCrop(32, generator=7)(views, target)[0] for _ in range(2)]
    b = [RandomCrop(32, generator=torch.Generator().manual_seed(7))(views, target)[0] for _ in range(2)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    flip = HorizontalFlip(generator=1)
    flips = [torch.equal(flip(views, target)[0], views) for _ in range(20)]
    assert 0 < sum(flips) < 20
    crops = RandomCrop(32, generator=1)
    assert len({tuple(crops(views, target)[0][0, 0, 0, :4].tolist()) for _ in range(10)}) > 1
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was never touched


def test_unknown_spatial_keys_raise(flow_items, image_items):
    views, target = flow_items[0]
    for transform in (Resize(32), HorizontalFlip(p=1.0), RandomCrop(32)):
        with pytest.raises(ValueError, match="'occlusion'"):
            transform(views, dict(target, occlusion=torch.zeros(SIZE, SIZE)))
        out = transform(views, dict(target, note=torch.tensor([1, 2, 3])))[1]  # not spatial: passes
        assert torch.equal(out["note"], torch.tensor([1, 2, 3]))
    image, itarget = image_items[0]
    with pytest.raises(ValueError, match="keypoints"):
        hflip(image, dict(itarget, keypoints=torch.zeros(len(itarget["boxes"]), 5, 3)))


def test_stereo_flip_needs_right_view_keys(stereo_items):
    views, target = stereo_items[0]
    for missing in ("disparity_right", "valid_right"):
        with pytest.raises(ValueError, match=missing):
            hflip(views, {k: v for k, v in target.items() if k != missing})
    with pytest.raises(ValueError, match="'masks'.*left view"):
        hflip(views, dict(target, masks=torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)))
    only_depth = {k: v for k, v in target.items() if k not in ("focal",)}
    with pytest.raises(ValueError, match="focal"):
        hflip(views, only_depth)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Resize(0), "size"),
        (lambda: Resize((1, 2, 3)), "size"),
        (lambda: RandomCrop((8, -1)), "size"),
        (lambda: RandomCrop(8, generator="x"), "generator"),  # type: ignore[arg-type]
        (lambda: HorizontalFlip(p=1.5), "p must"),
        (lambda: Compose([1]), "callable"),  # type: ignore[list-item]
        (lambda: RandomCrop(SIZE + 1)(torch.rand(3, SIZE, SIZE), {}), "larger"),
        (lambda: crop(torch.rand(3, 8, 8), {}, 4, 0, 5, 8), "not inside"),
        (lambda: resize(torch.zeros(3, 8, 8, dtype=torch.uint8), {}, 4), "float"),
        (lambda: resize(torch.rand(8, 8), {}, 4), "float"),
        (lambda: resize(torch.rand(3, 8, 8), [], 4), "dict"),  # type: ignore[arg-type]
        (lambda: resize(torch.rand(3, 8, 8), {"boxes": torch.zeros(2, 5)}, 4), "boxes"),
        (lambda: resize(torch.rand(3, 8, 8), {"masks": torch.zeros(1, 8, 7)}, 4), "masks"),
        (lambda: resize(torch.rand(2, 3, 8, 8), {"flow": torch.zeros(3, 8, 8)}, 4), "flow"),
        (lambda: resize(torch.rand(3, 3, 8, 8), {"tracks": torch.zeros(1, 2, 4)}, 4), "tracks"),
        (lambda: resize(torch.rand(3, 3, 8, 8), {"disparity": torch.zeros(1, 8, 8)}, 4), "stereo pair"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
