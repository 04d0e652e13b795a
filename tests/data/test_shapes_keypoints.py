"""Shapes keypoints: on the drawn outline, named consistently, true under flip / resize / crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structpred.data.registry import build_dataset
from structpred.data.shapes import ShapesWorld
from structpred.data.shapes_geometry import CLASS_NAMES
from structpred.data.shapes_keypoints import (
    CLASS_KEYPOINT_NAMES,
    LOCAL_POINTS,
    NUM_KEYPOINTS,
    ShapesKeypoints,
)
from structpred.data.transforms import HorizontalFlip, crop, hflip, resize

CENTRED = ("circle", "ring")


@pytest.fixture(scope="module")
def data() -> ShapesKeypoints:
    return ShapesKeypoints("val", size=96, num_images=12)


def _centres(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.stack([xs + 0.5, ys + 0.5], 1)  # (P, 2) pixel centres


def _on_outline(mask: np.ndarray, x: float, y: float) -> bool:
    """The point is on the mask's outline: an inside pixel centre within 2.1 px (a star's tip is
    sharp) and an outside one within 1.5 px (it is not deep inside)."""
    inside = _centres(mask)
    outside = _centres(~mask) if (~mask).any() else np.zeros((0, 2))
    d_in = np.hypot(*(inside - [x, y]).T).min() if len(inside) else np.inf
    d_out = np.hypot(*(outside - [x, y]).T).min() if len(outside) else np.inf
    return bool(d_in <= 2.1 and d_out <= 1.5)


def _clockwise_from_top(points: np.ndarray, centre: np.ndarray) -> bool:
    """Slot 0 is the topmost point and the others follow clockwise on screen (y down)."""
    if len(points) < 2:
        return True
    if int(np.argmin(points[:, 1])) != 0:
        return False
    theta = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    turn = np.mod(theta - theta[0], 2 * np.pi)
    return bool(np.all(np.diff(turn) > 0))


def test_same_items_as_the_shapes_world_plus_keypoints(data: ShapesKeypoints) -> None:
    plain = ShapesWorld("val", size=96, num_images=12)
    image, target = data[3]
    image0, target0 = plain[3]
    assert torch.equal(image, image0)
    assert sorted(target) == sorted([*target0, "keypoints"])
    assert all(torch.equal(target[k], target0[k]) for k in target0)
    kp = target["keypoints"]
    assert kp.dtype == torch.float32 and kp.shape == (len(target["labels"]), NUM_KEYPOINTS, 3)


def test_names_sigmas_and_flip_table_are_consistent(data: ShapesKeypoints) -> None:
    K = NUM_KEYPOINTS
    assert len(data.keypoint_names) == K == len(data.keypoint_sigmas)
    assert K == max(len(v) for v in LOCAL_POINTS.values())
    assert list(data.class_keypoint_names) == list(CLASS_NAMES)
    for label, name in enumerate(CLASS_NAMES, start=1):
        n = len(CLASS_KEYPOINT_NAMES[name])
        assert n == len(LOCAL_POINTS[name])
        row = data.keypoint_flip[label]
        assert sorted(row.tolist()) == list(range(K)) and row[0] == 0
        assert torch.equal(row[n:], torch.arange(n, K))  # unused slots stay
        names = CLASS_KEYPOINT_NAMES[name]
        for j in range(n):  # a flip swaps right and left names, keeps top / bottom / centre
            flipped = names[int(row[j])]
            assert flipped == names[j].replace("right", "LEFT").replace("left", "right").replace(
                "LEFT", "left"
            )
        assert all(0 <= a < n and 0 <= b < n for a, b in data.skeletons[label])


def test_points_lie_on_the_drawn_outline_and_unused_slots_are_empty(data: ShapesKeypoints) -> None:
    checked = {"outline": 0, "centre": 0, "hidden": 0}
    for i in range(len(data)):
        s = data.sample(i)
        kp = s.target["keypoints"].numpy()
        for n, k in enumerate(s.object_ids.tolist()):
            name = CLASS_NAMES[int(s.target["labels"][n]) - 1]
            m = len(LOCAL_POINTS[name])
            assert (kp[n, m:] == 0).all()  # a class's unused slots: (0, 0, 0)
            amodal = s.amodal[k].numpy()
            for j in range(m):
                x, y, v = kp[n, j]
                if v == 0:
                    assert x == y == 0
                    continue
                H, W = amodal.shape
                assert 0 <= x < W and 0 <= y < H
                holder = int(s.owner[int(y), int(x)])
                assert (v == 1) == (holder > k + 1)  # hidden exactly where a nearer object covers it
                checked["hidden"] += int(v == 1)
                if name in CENTRED:
                    cut = amodal[0].any() or amodal[-1].any() or amodal[:, 0].any() or amodal[:, -1].any()
                    if not cut:  # the centre of a disc the border does not cut is its mask's centroid
                        assert np.allclose(_centres(amodal).mean(0), [x, y], atol=0.5)
                        checked["centre"] += 1
                else:
                    assert _on_outline(amodal, x, y), (i, n, name, j, x, y)
                    checked["outline"] += 1
            labelled = kp[n, :m][kp[n, :m, 2] > 0]
            if len(labelled) == m:
                obj = s.scene.objects[k]
                assert _clockwise_from_top(labelled[:, :2], np.array([obj.cx, obj.cy]))
    assert checked["outline"] > 40 and checked["centre"] > 2 and checked["hidden"] > 0, checked


def _outline_after(image_mask: torch.Tensor, kp: torch.Tensor, n: int, name: str) -> None:
    if name in CENTRED:
        return
    mask = image_mask.bool().numpy()
    for j in range(len(LOCAL_POINTS[name])):
        x, y, v = kp[n, j].tolist()
        if v > 0:
            assert _on_outline(mask, x, y), (n, j, x, y)


def test_a_flip_mirrors_and_renames_the_points(data: ShapesKeypoints) -> None:
    image, target = data[5]
    amodal = data.sample(5)
    amodal_masks = amodal.amodal[amodal.object_ids].flip(-1)  # (N, H, W) mirrored unoccluded masks
    assert len(target["labels"]) >= 3
    with pytest.raises(ValueError, match="keypoint_flip"):
        hflip(image, target)  # without the permutation a flip would mislabel left and right
    flipped_image, flipped = hflip(image, target, data.keypoint_flip)
    W = image.shape[-1]
    twice = hflip(flipped_image, flipped, data.keypoint_flip)[1]["keypoints"]
    assert torch.allclose(twice, target["keypoints"], atol=1e-5)
    renamed = 0
    for n, label in enumerate(flipped["labels"].tolist()):
        m = len(LOCAL_POINTS[CLASS_NAMES[label - 1]])
        kp = flipped["keypoints"]
        _outline_after(amodal_masks[n], kp, n, CLASS_NAMES[label - 1])
        labelled = kp[n, :m][kp[n, :m, 2] > 0].numpy()
        if len(labelled) == m and m > 1:
            before = target["keypoints"][n, :m].numpy()
            centre = before[:, :2].mean(0)  # the polygon's centre = the object's centre
            centre[0] = W - centre[0]
            assert _clockwise_from_top(labelled[:, :2], centre)
            # ... which a plain mirror (no renaming) breaks: it runs anticlockwise.
            mirrored = before[:, :2].copy()
            mirrored[:, 0] = W - mirrored[:, 0]
            assert not _clockwise_from_top(mirrored, centre)
            renamed += 1
    assert renamed >= 1


def test_flip_transform_class_and_a_per_object_permutation() -> None:
    kp = torch.tensor([[[10.0, 5.0, 2.0], [30.0, 6.0, 1.0], [0.0, 0.0, 0.0]]])
    target = {"boxes": torch.tensor([[5.0, 0.0, 40.0, 10.0]]), "labels": torch.tensor([1]), "keypoints": kp}
    image = torch.zeros(3, 12, 50)
    _, out = HorizontalFlip(p=1.0, keypoint_flip=[1, 0, 2])(image, target)
    assert torch.equal(
        out["keypoints"], torch.tensor([[[20.0, 6.0, 1.0], [40.0, 5.0, 2.0], [0.0, 0.0, 0.0]]])
    )
    with pytest.raises(ValueError, match="permutations"):
        hflip(image, target, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="label rows"):
        hflip(image, target, torch.tensor([[0, 1, 2]]))  # one row, label 1


def test_resize_scales_and_crop_moves_the_points(data: ShapesKeypoints) -> None:
    image, target = data[2]
    small_image, small = resize(image, target, (48, 64))
    scale = torch.tensor([64 / 96, 48 / 96, 1.0])
    labelled = target["keypoints"][..., 2:] > 0
    assert torch.allclose(small["keypoints"], target["keypoints"] * scale * labelled)
    top, left = 10, 20
    _, cut = crop(image, target, top, left, 60, 50)
    assert len(cut["keypoints"]) == len(cut["boxes"])  # dropped with their objects
    kept = cut["keypoints"]
    inside = kept[..., 2] > 0
    assert bool(((kept[..., 0] >= 0) & (kept[..., 0] <= 50) & (kept[..., 1] <= 60))[inside].all())
    assert bool((kept[~inside] == 0).all())


def test_registered_as_data_spec() -> None:
    ds = build_dataset("shapes_keypoints", "test", num_images=2, size=64)
    assert isinstance(ds, ShapesKeypoints) and ds[0][1]["keypoints"].shape[1:] == (NUM_KEYPOINTS, 3)
