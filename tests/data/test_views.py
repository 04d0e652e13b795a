"""Pair and clip datasets of the shapes world: the item contract, exact geometry, the registry,
collate, determinism and caching, transforms and bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from structpred.data import ShapesFlow, ShapesStereo, ShapesVideo, ShapesWorld, build_dataset, collate
from structpred.data.transforms import Compose, HorizontalFlip, RandomCrop
from tests.data.view_checks import check_clip_tracks, check_flow_pair, check_stereo_pair

SIZE = 48
KEYS = {
    "shapes-flow": {"flow": (torch.float32, (2, SIZE, SIZE)), "valid": (torch.bool, (SIZE, SIZE))},
    "shapes-stereo": {
        "disparity": (torch.float32, (1, SIZE, SIZE)),
        "disparity_right": (torch.float32, (1, SIZE, SIZE)),
        "depth": (torch.float32, (1, SIZE, SIZE)),
        "valid": (torch.bool, (SIZE, SIZE)),
        "valid_right": (torch.bool, (SIZE, SIZE)),
        "focal": (torch.float32, ()),
        "baseline": (torch.float32, ()),
    },
    "shapes-video": {"instances": (torch.int64, (5, SIZE, SIZE))},
}


def same_item(a, b) -> bool:
    (xa, ta), (xb, tb) = a, b
    return (
        torch.equal(xa, xb)
        and ta.keys() == tb.keys()
        and all(torch.equal(ta[k].nan_to_num(-1.0), tb[k].nan_to_num(-1.0)) for k in ta)
    )


@pytest.mark.parametrize("spec", list(KEYS))
def test_contract_through_the_registry(spec):
    extra = {"length": 5} if spec == "shapes-video" else {}
    ds = build_dataset(spec, "train", num_images=4, size=SIZE, **extra)
    world = ShapesWorld("train", size=SIZE, num_images=4)
    assert len(ds) == 4
    views, target = ds[2]
    num_views = 5 if spec == "shapes-video" else 2
    assert ds.num_views == num_views and ds.kind == ("clip" if spec == "shapes-video" else "pair")
    assert views.dtype == torch.float32 and views.shape == (num_views, 3, SIZE, SIZE)
    assert 0.0 <= float(views.min()) and float(views.max()) <= 1.0
    assert torch.equal(views[0], world[2][0])  # view 0 / frame 0 is the world's image
    assert all(isinstance(v, torch.Tensor) for v in target.values())  # the engine moves them
    assert (
        target["image_id"].dtype == torch.int64
        and target["image_id"].shape == ()
        and int(target["image_id"]) == 2
    )
    for key, (dtype, shape) in KEYS[spec].items():
        assert target[key].dtype == dtype and tuple(target[key].shape) == shape, key
    if spec == "shapes-video":
        m = target["track_ids"].shape[0]
        assert target["tracks"].shape == (m, 5, 4) and target["tracks"].dtype == torch.float32
        assert target["visible"].shape == (m, 5) and target["visible"].dtype == torch.bool
        assert target["labels"].shape == (m,) and target["labels"].dtype == torch.int64
        assert target["track_ids"].dtype == torch.int64
        assert ds.categories is world.categories or ds.categories.names == world.categories.names
        check_clip_tracks(target)
    else:
        assert ds.categories is None
        check = check_flow_pair if spec == "shapes-flow" else check_stereo_pair
        assert check(views, target) > 0


def test_stereo_valid_right_matches_the_world():
    world = ShapesWorld("val", size=SIZE, num_images=3, seed=2)
    ds = ShapesStereo("val", size=SIZE, num_images=3, seed=2)
    for i in range(3):
        pair = world.stereo_pair(i)
        views, target = ds[i]
        assert torch.equal(target["valid_right"], pair["valid_right"])
        assert float(target["focal"]) == world.focal and float(target["baseline"]) == pytest.approx(
            world.baseline
        )
        # Reference: the right pixel's surface is found at x + d_right in the left view.
        right, left = pair["right"], pair["left"]
        ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        xl = xs + pair["disparity_right"][0].long()
        vr = pair["valid_right"]
        assert bool((xl[vr] < SIZE).all()) and float(vr.float().mean()) > 0.5
        assert torch.equal(left[:, ys[vr], xl[vr]], right[:, vr])
        # A right pixel missing from the left view is hidden behind a nearer surface or off-image.
        hidden = ~vr & (xl < SIZE)
        assert bool(
            (pair["disparity"][0][ys[hidden], xl[hidden]] >= pair["disparity_right"][0][hidden]).all()
        )


def test_collate_batches_pairs_and_clips_as_lists():
    for ds in (ShapesFlow(size=SIZE, num_images=3), ShapesVideo(size=SIZE, num_images=3, length=3)):
        loader = DataLoader(ds, batch_size=3, collate_fn=collate)
        images, targets = next(iter(loader))
        assert isinstance(images, list) and len(images) == 3 and len(targets) == 3
        for i, (views, target) in enumerate(zip(images, targets, strict=True)):
            assert same_item((views, target), ds[i])


def test_determinism_and_cache():
    for cls, extra in ((ShapesFlow, {}), (ShapesStereo, {}), (ShapesVideo, {"length": 3})):
        plain = cls("test", size=SIZE, num_images=3, seed=4, **extra)
        cached = cls("test", size=SIZE, num_images=3, seed=4, cache=True, **extra)
        first = plain[1]
        assert same_item(first, plain[1]) and same_item(first, plain[-2])
        assert same_item(first, cached[1]) and same_item(first, cached[1])
        views, target = cached[1]
        views.zero_()  # a caller's in-place change must not reach the cache
        next(iter(target.values())).zero_()
        assert same_item(first, cached[1])
        assert not torch.equal(first[0], cls("test", size=SIZE, num_images=3, seed=5, **extra)[1][0])


def test_transforms_apply_to_items():
    transform = Compose([RandomCrop(32, generator=0), HorizontalFlip(p=1.0)])
    ds = ShapesStereo(size=SIZE, num_images=2, transforms=transform)
    views, target = ds[0]
    assert views.shape == (2, 3, 32, 32) and target["disparity"].shape == (1, 32, 32)
    check_stereo_pair(views, target)
    clip = ShapesVideo(size=SIZE, num_images=2, length=3, transforms=transform)
    frames, target = clip[1]
    assert frames.shape == (3, 3, 32, 32)
    check_clip_tracks(target)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: ShapesFlow(split="dev"), ValueError, "split"),
        (lambda: ShapesStereo(size=8), ValueError, "size"),
        (lambda: ShapesStereo(baseline=0.0), ValueError, "baseline"),
        (lambda: ShapesFlow(num_images=0), ValueError, "num_images"),
        (lambda: ShapesFlow(max_motion=-1), ValueError, "max_motion"),
        (lambda: ShapesVideo(length=0), ValueError, "length"),
        (lambda: ShapesVideo(length=2.0), ValueError, "length"),
        (lambda: ShapesVideo(seed=-1), ValueError, "seed"),
        (lambda: ShapesFlow(transforms=3), ValueError, "transforms"),
        (lambda: ShapesStereo(cache="yes"), ValueError, "cache"),
        (lambda: build_dataset("shapes-sideways", "train"), ValueError, "unknown dataset"),
        (lambda: ShapesFlow(num_images=2, size=SIZE)[2], IndexError, "out of range"),
        (lambda: ShapesVideo(num_images=2, size=SIZE)[1.5], TypeError, "index"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
