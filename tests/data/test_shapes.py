"""The shapes world: contract, determinism, mutual consistency of the annotations, flow,
stereo and tracks, and bad arguments.

References are written out here: boxes from a per-object ``nonzero`` loop, validity of the
flow / stereo pairs by following every pixel by hand against independent renders.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from structpred.data.shapes import ShapesWorld
from structpred.data.shapes_geometry import CLASS_NAMES, PART_CLASSES, PART_NAMES, shape_inside
from structpred.data.shapes_render import render_scene

NUM_CHECKED = 24  # samples checked in depth; tiny objects / occlusion must show up among them


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld("train", size=(128, 128), num_images=500, seed=0)


@pytest.fixture(scope="module")
def samples(world):
    return [world.sample(i) for i in range(NUM_CHECKED)]


def tight_box(mask: torch.Tensor) -> list[float]:
    ys, xs = mask.nonzero(as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def assert_same_item(a, b) -> None:
    (img_a, tgt_a), (img_b, tgt_b) = a, b
    assert torch.equal(img_a, img_b)
    assert tgt_a.keys() == tgt_b.keys()
    for key in tgt_a:
        assert torch.equal(tgt_a[key], tgt_b[key]), key


# ---------------------------------------------------------------------------- contract


def test_item_contract(world):
    height, width = world.size
    for i in range(6):
        image, target = world[i]
        n = target["boxes"].shape[0]
        assert image.dtype == torch.float32 and image.shape == (3, height, width)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
        assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (n, height, width)
        assert set(target["masks"].unique().tolist()) <= {0, 1}
        assert target["semantic"].dtype == torch.int64 and target["semantic"].shape == (height, width)
        assert target["parts"].dtype == torch.int64 and target["parts"].shape == (height, width)
        assert target["depth"].dtype == torch.float32 and target["depth"].shape == (1, height, width)
        assert target["area"].dtype == torch.float32 and target["area"].shape == (n,)
        assert target["iscrowd"].dtype == torch.uint8 and target["iscrowd"].shape == (n,)
        assert target["image_id"].dtype == torch.int64 and target["image_id"].dim() == 0
        assert int(target["image_id"]) == i
        assert bool(((target["labels"] >= 1) & (target["labels"] <= len(CLASS_NAMES))).all())
        assert set(target["semantic"].unique().tolist()) <= set(range(len(CLASS_NAMES) + 1)) | {255}
        assert set(target["parts"].unique().tolist()) <= set(range(len(PART_NAMES) + 1)) | {255}
        assert bool(torch.isfinite(target["depth"]).all()) and float(target["depth"].min()) > 0
        boxes = target["boxes"]
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        assert bool(
            (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
        )


def test_categories_and_parts(world):
    assert world.categories.names == list(CLASS_NAMES) and len(world.categories) >= 5
    assert len(world.part_names) == len(set(world.part_names)) == len(world.part_classes)
    for label in range(1, len(CLASS_NAMES) + 1):
        owned = [p for p, k in enumerate(world.part_classes, start=1) if k == label]
        assert len(owned) >= 2
        assert all(world.part_names[p - 1].startswith(CLASS_NAMES[label - 1] + "/") for p in owned)


def test_non_square_size_and_transforms():
    calls = []

    def flip(image, target):
        calls.append(int(target["image_id"]))
        return image.flip(-1), target

    plain = ShapesWorld("val", size=(48, 80), num_images=3)
    flipped = ShapesWorld("val", size=(48, 80), num_images=3, transforms=flip)
    image, target = plain[2]
    assert image.shape == (3, 48, 80) and target["semantic"].shape == (48, 80)
    assert torch.equal(flipped[2][0], image.flip(-1)) and calls == [2]
    assert ShapesWorld(size=40).size == (40, 40)


@pytest.mark.parametrize("label", range(1, len(CLASS_NAMES) + 1))
def test_shape_geometry_fits_unit_disc_and_parts_are_substantial(label):
    g = np.linspace(-1.2, 1.2, 481)
    u, v = np.meshgrid(g, g)
    inside, part = shape_inside(label, u, v)
    assert not (inside & (u * u + v * v > 1.0 + 1e-9)).any()
    area = inside.sum()
    second = (inside & (part == 1)).sum() / area
    assert 0.25 < second < 0.75, (CLASS_NAMES[label - 1], second)


# ---------------------------------------------------------------------------- determinism


def test_same_index_twice_and_any_access_order(world):
    forward = [world[i] for i in range(5)]
    backward = [world[i] for i in reversed(range(5))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert_same_item(a, b)
    assert_same_item(world[3], world[3])
    assert_same_item(world[-1], world[len(world) - 1])


def test_two_instances_agree_and_seeds_differ(world):
    other = ShapesWorld("train", size=(128, 128), num_images=500, seed=0)
    for i in (0, 7, 499):
        assert_same_item(world[i], other[i])
    shorter = ShapesWorld("train", size=(128, 128), num_images=10, seed=0)
    assert_same_item(world[4], shorter[4])  # a sample does not depend on the dataset length
    reseeded = ShapesWorld("train", size=(128, 128), num_images=10, seed=1)
    assert not torch.equal(world[4][0], reseeded[4][0])


def test_cache_gives_identical_items_and_protects_itself(world):
    cached = ShapesWorld("train", size=(128, 128), num_images=500, seed=0, cache=True)
    for i in (0, 7, 0):  # a miss, a miss, then a hit
        assert_same_item(world[i], cached[i])
    image, target = cached[7]
    image.zero_()
    target["boxes"].add_(5.0)  # the caller's copy only
    assert_same_item(world[7], cached[7])
    assert len(cached._cache or {}) == 2


def test_splits_are_disjoint():
    images = []
    for split in ("train", "val", "test"):
        ds = ShapesWorld(split, size=(32, 32), num_images=12)
        images += [ds[i][0] for i in range(12)]
    flat = torch.stack(images).reshape(len(images), -1)  # (36, 3*32*32)
    same = (flat[:, None] == flat[None]).all(-1)  # (36, 36)
    assert torch.equal(same, torch.eye(len(images), dtype=torch.bool))


# ---------------------------------------------------------------------------- annotations


def test_masks_boxes_semantic_parts_depth_agree(world, samples):
    focal_baseline = world.focal * world.baseline
    for s in samples:
        t, objects = s.target, s.scene.objects
        masks = t["masks"].bool()
        assert int(t["masks"].sum(0).max()) <= 1  # masks never overlap (sum(0) is [H, W] even for N = 0)
        assert masks.shape[0] == len(s.object_ids)
        for n, k in enumerate(s.object_ids.tolist()):
            mask = masks[n]
            assert torch.equal(mask, s.owner == k + 1)
            assert t["boxes"][n].tolist() == tight_box(mask)
            assert float(t["area"][n]) == float(mask.sum())
            assert int(t["labels"][n]) == objects[k].label
            assert bool((t["semantic"][mask] == objects[k].label).all())
            ids = t["parts"][mask]
            assert bool(((ids >= 1) & (ids <= len(PART_NAMES))).all())
            assert all(PART_CLASSES[p - 1] == objects[k].label for p in ids.unique().tolist())
            depth = focal_baseline / objects[k].disparity
            assert torch.allclose(t["depth"][0][mask], torch.tensor(depth, dtype=torch.float32))
        labelled = masks.any(0)
        ignored = t["semantic"] == 255
        assert torch.equal((t["semantic"] > 0) & ~ignored, labelled)  # labelled pixels are mask pixels
        assert torch.equal((t["parts"] > 0) & (t["parts"] != 255), labelled)
        assert torch.equal(t["parts"] == 255, ignored)
        assert torch.equal(ignored | labelled, s.owner > 0)
        background = s.owner == 0
        assert bool((t["depth"][0][background] == focal_baseline).all())  # disparity 1: farthest
        assert bool((t["depth"][0][~background] < focal_baseline).all())


def test_dropped_objects_follow_the_visibility_rule(world, samples):
    for s in samples:
        count = len(s.scene.objects)
        visible = torch.bincount(s.owner.reshape(-1), minlength=count + 1)[1:]
        amodal = s.amodal.reshape(count, -1).sum(1)
        keep = (visible >= world.min_visible_pixels) & (visible >= world.min_visible_fraction * amodal)
        assert s.object_ids.tolist() == keep.nonzero().reshape(-1).tolist()
        for k in (~keep).nonzero().reshape(-1).tolist():
            assert bool((s.target["semantic"][s.owner == k + 1] == 255).all())


def test_occlusion_matches_depth_order(samples):
    for s in samples:
        disparity = torch.tensor([0] + [o.disparity for o in s.scene.objects])  # index = owner
        for k, obj in enumerate(s.scene.objects):
            hidden = s.amodal[k] & (s.owner != k + 1)
            occluders = s.owner[hidden]
            assert bool((occluders > 0).all())  # only objects hide objects
            assert bool((disparity[occluders] >= obj.disparity).all())  # ... and never farther ones
            assert bool((occluders > k).all())  # ... drawn later


def test_unoccluded_objects_have_two_parts(samples):
    checked = 0
    for s in samples:
        height, width = s.owner.shape
        for n, k in enumerate(s.object_ids.tolist()):
            obj = s.scene.objects[k]
            in_frame = (
                obj.radius <= obj.cx <= width - obj.radius and obj.radius <= obj.cy <= height - obj.radius
            )
            unoccluded = torch.equal(s.amodal[k], s.target["masks"][n].bool())
            if obj.radius >= 4 and in_frame and unoccluded:
                checked += 1
                assert s.target["parts"][s.amodal[k]].unique().numel() == 2, (obj.label, obj.radius)
    assert checked >= 10


def test_variety_tiny_objects_occlusion_all_classes_and_parts(world, samples):
    sizes, occluded, labels, parts = [], 0, set(), set()
    for s in samples:
        boxes = s.target["boxes"]
        sizes += (boxes[:, 2:] - boxes[:, :2]).amax(1).tolist()
        for n, k in enumerate(s.object_ids.tolist()):
            occluded += int(s.target["masks"][n].sum() < s.amodal[k].sum())
        labels |= set(s.target["labels"].tolist())
        parts |= set(s.target["parts"].unique().tolist()) - {0, 255}
    assert min(sizes) <= 6 and max(sizes) >= 40  # tiny objects (a few px) and large ones
    assert occluded >= 3
    assert labels == set(range(1, len(CLASS_NAMES) + 1))
    assert parts == set(range(1, len(PART_NAMES) + 1))


def test_colour_alone_is_not_a_perfect_cue(samples):
    colours, labels = [], []
    for s in samples:
        for n in range(len(s.object_ids)):
            colours.append(s.image[:, s.target["masks"][n].bool()].mean(1))
            labels.append(int(s.target["labels"][n]))
    x, y = torch.stack(colours), torch.tensor(labels)
    centroids = torch.stack([x[y == k].mean(0) for k in range(1, len(CLASS_NAMES) + 1)])
    predicted = torch.cdist(x, centroids).argmin(1) + 1
    accuracy = float((predicted == y).float().mean())
    assert 0.2 < accuracy < 0.95  # colour helps (palettes) but does not decide


def test_generation_is_fast():
    ds = ShapesWorld("train", num_images=200, seed=3)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    assert time.perf_counter() - start < 10.0  # ~3 ms per sample on one core when idle


# ---------------------------------------------------------------------------- flow


def test_motion_pair_flow_warps_image2_back_to_image1(world):
    any_invalid = 0
    for i in range(6):
        pair = world.motion_pair(i)
        s = world.sample(i)
        image1, image2, flow, valid = pair["image1"], pair["image2"], pair["flow"], pair["valid"]
        _, height, width = image1.shape
        assert flow.dtype == torch.float32 and flow.shape == (2, height, width)
        assert valid.dtype == torch.bool and valid.shape == (height, width)
        assert torch.equal(image1, s.image)
        moves = pair["translations"]
        assert int(moves[1:].abs().max()) <= world.max_motion
        # Flow is the translation of the surface each pixel shows.
        assert torch.equal(flow.permute(1, 2, 0), moves[s.owner].float())
        # Reference validity: follow each pixel into an independent render of image 2.
        second = render_scene(s.scene, world.size, offsets=moves.numpy())
        assert torch.equal(torch.from_numpy(second.image).permute(2, 0, 1), image2)
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        tx, ty = xs + flow[0].long(), ys + flow[1].long()
        inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
        owner2 = torch.from_numpy(second.owner)
        landed = owner2[ty.clamp(0, height - 1), tx.clamp(0, width - 1)]
        assert torch.equal(valid, inside & (landed == s.owner))
        # Backward warp (nearest, integer flow) reproduces image 1 on valid pixels, exactly.
        warped = image2[:, ty.clamp(0, height - 1), tx.clamp(0, width - 1)]  # (3, H, W)
        assert torch.equal(warped[:, valid], image1[:, valid])
        assert float(valid.float().mean()) > 0.5
        any_invalid += int((~valid).sum())
        assert not torch.equal(image1, image2)
    assert any_invalid > 0


# ---------------------------------------------------------------------------- stereo


def test_stereo_pair_left_right_consistency(world):
    for i in range(6):
        pair = world.stereo_pair(i)
        image, target = world[i]
        left, right, disparity, valid = pair["left"], pair["right"], pair["disparity"], pair["valid"]
        _, height, width = left.shape
        assert torch.equal(left, image) and torch.equal(pair["depth"], target["depth"])
        assert disparity.dtype == torch.float32 and disparity.shape == (1, height, width)
        assert pair["disparity_right"].shape == (1, height, width)
        assert right.shape == left.shape and not torch.equal(left, right)
        # d = f * B / Z
        expected = pair["focal"] * pair["baseline"] / pair["depth"]
        assert torch.allclose(disparity, expected, rtol=1e-5)
        d = disparity[0].long()
        assert torch.equal(d.float(), disparity[0]) and int(d.min()) >= 1
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        xr = xs - d
        assert bool((xr[valid] >= 0).all())
        # Non-occluded left pixels are found in the right image at x - d.
        assert torch.equal(right[:, ys[valid], xr[valid]], left[:, valid])
        # An in-frame left pixel is missing from the right view only behind a surface at least as near.
        hidden = ~valid & (xr >= 0)
        covering = pair["disparity_right"][0][ys[hidden], xr[hidden]]
        assert bool((covering >= disparity[0][hidden]).all())
        assert float(valid.float().mean()) > 0.5


# ---------------------------------------------------------------------------- tracking


def test_sequence_tracks(world):
    overlaps = 0
    for i in range(4):
        seq = world.sequence(i, length=10)
        frames, tracks, visible, inst = seq["frames"], seq["tracks"], seq["visible"], seq["instances"]
        num = seq["track_ids"].shape[0]
        assert frames.shape == (10, 3, *world.size) and frames.dtype == torch.float32
        assert tracks.shape == (num, 10, 4) and visible.shape == (num, 10) and inst.shape == (10, *world.size)
        assert torch.equal(seq["track_ids"], torch.arange(1, num + 1))
        image, target = world[i]
        assert torch.equal(frames[0], image)
        assert sorted(seq["labels"][visible[:, 0]].tolist()) == sorted(target["labels"].tolist())
        assert torch.equal(torch.isnan(tracks).all(-1), ~visible)
        assert torch.equal(torch.isnan(tracks).any(-1), ~visible)
        for k in range(num):
            track_id = int(seq["track_ids"][k])
            for t in range(10):
                if visible[k, t]:
                    assert tracks[k, t].tolist() == tight_box(inst[t] == track_id)
            # Smooth motion: between consecutive frames where the box keeps its size (not
            # occluded or cut), the centre moves by at most speed + wobble (< 6 px here).
            for t in range(9):
                a, b = tracks[k, t], tracks[k, t + 1]
                if visible[k, t] and visible[k, t + 1] and torch.equal(a[2:] - a[:2], b[2:] - b[:2]):
                    assert float(((a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2).abs().max()) < 8.0
        for t in range(10):
            boxes = tracks[visible[:, t], t]
            lo = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
            hi = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
            inter = (hi - lo).clamp(min=0).prod(-1)
            overlaps += int((inter.triu(1) > 0).sum())
        assert not torch.equal(frames[0], frames[-1])
    assert overlaps > 0  # paths cross somewhere
    seq_again = world.sequence(3, length=10)
    assert torch.equal(seq_again["frames"], seq["frames"]) and torch.equal(
        seq_again["tracks"],
        tracks,
    )


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, "split"),
        ({"size": 0}, "size"),
        ({"size": (-4, 64)}, "size"),
        ({"size": (64,)}, "size"),
        ({"size": (64.0, 64.0)}, "size"),
        ({"num_images": 0}, "num_images"),
        ({"num_images": -3}, "num_images"),
        ({"seed": -1}, "seed"),
        ({"num_objects": (3, 2)}, "num_objects"),
        ({"min_visible_fraction": 1.5}, "min_visible_fraction"),
        ({"baseline": 0.0}, "baseline"),
        ({"max_motion": -1}, "max_motion"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesWorld(**kwargs)


def test_bad_indices():
    ds = ShapesWorld(num_images=4, size=32)
    for bad in (4, 100, -5):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
    for method in (ds.motion_pair, ds.stereo_pair, ds.sequence, ds.sample):
        with pytest.raises(IndexError):
            method(4)
    with pytest.raises(TypeError, match="index"):
        ds[1.0]  # type: ignore[index]
    with pytest.raises(ValueError, match="length"):
        ds.sequence(0, length=0)
