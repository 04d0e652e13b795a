"""shapes-objects: object crops of the shapes world, one class per item.

References written here: the crop window by a loop over its pixels (zero outside the scene),
and the kept objects by walking the shapes world's scenes and their boxes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from structpred.data import build_dataset
from structpred.data.shapes import ShapesWorld
from structpred.data.shapes_objects import ShapesObjects, crop_square

SMALL = {"num_images": 40, "scene_size": 64, "min_box": 6}


def naive_window(image: torch.Tensor, box: list[float], margin: float) -> torch.Tensor:
    """The square window around ``box`` pixel by pixel, 0 outside the image (no resizing)."""
    _, H, W = image.shape
    x1, y1, x2, y2 = box
    side = max(1, math.ceil((1 + 2 * margin) * max(x2 - x1, y2 - y1)))
    left, top = int(round((x1 + x2) / 2 - side / 2)), int(round((y1 + y2) / 2 - side / 2))
    out = torch.zeros(3, side, side)
    for r in range(side):
        for c in range(side):
            y, x = top + r, left + c
            if 0 <= y < H and 0 <= x < W:
                out[:, r, c] = image[:, y, x]
    return out


@pytest.mark.parametrize("box", [[10.0, 12.0, 20.0, 30.0], [0.0, 0.0, 9.0, 5.0], [25.0, 28.0, 32.0, 32.0]])
def test_crop_square_is_the_window_resized(box: list[float]) -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 32, 32, generator=g)
    window = naive_window(image, box, 0.25)
    side = window.shape[-1]
    # At the window's own side the resize is the identity: the crop is the window itself.
    torch.testing.assert_close(crop_square(image, torch.tensor(box), 0.25, side), window)
    resized = F.interpolate(window[None], size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(crop_square(image, torch.tensor(box), 0.25, 16), resized[0].clamp(0, 1))


def test_items_are_the_kept_objects_of_the_scenes_in_order() -> None:
    d = ShapesObjects("val", **SMALL, size=20, margin=0.5, seed=3)
    world = ShapesWorld("val", size=64, num_images=1000, seed=3)
    expected: list[tuple[int, int, list[float]]] = []  # (scene, label 0-based, box)
    scene = 0
    while len(expected) < len(d):
        image, target = world[scene]
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            if max(box[2] - box[0], box[3] - box[1]) >= 6 and len(expected) < len(d):
                expected.append((scene, label - 1, box))
        scene += 1
    for i, (scene, label, box) in enumerate(expected):
        image, target = d[i]
        assert image.shape == (3, 20, 20) and image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert target["labels"].dtype == torch.int64 and target["labels"].dim() == 0
        assert int(target["labels"]) == label and int(target["scene_id"]) == scene
        assert int(target["image_id"]) == i
        scene_image, _ = world[scene]
        torch.testing.assert_close(image, crop_square(scene_image, torch.tensor(box), 0.5, 20))


def test_deterministic_prefix_and_splits_differ() -> None:
    a, b = ShapesObjects("train", **SMALL), ShapesObjects("train", **SMALL)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    small = ShapesObjects("train", **{**SMALL, "num_images": 15})
    assert torch.equal(small.images, a.images[:15]) and torch.equal(small.labels, a.labels[:15])
    other = ShapesObjects("test", **SMALL)
    assert not torch.equal(other.images, a.images)
    reseeded = ShapesObjects("train", **SMALL, seed=1)
    assert not torch.equal(reseeded.images, a.images)


def test_labels_in_range_and_every_class_present() -> None:
    d = ShapesObjects("train", num_images=200, scene_size=64, min_box=6)
    assert d.num_classes == 6 and len(d.classes) == 6 and d.classes[0] == "circle"
    counts = torch.bincount(d.labels, minlength=6)
    assert counts.shape == (6,) and bool((counts > 10).all()), counts.tolist()
    assert len(d) == 200 and int(d[-1][1]["image_id"]) == 199


def test_min_box_filters_small_objects() -> None:
    d = ShapesObjects("train", num_images=30, scene_size=64, min_box=16, margin=0.0)
    # (which objects are kept, exactly: test_items_are_the_kept_objects_of_the_scenes_in_order)
    # A larger min_box keeps fewer objects per scene: the same count needs more scenes.
    loose = ShapesObjects("train", num_images=30, scene_size=64, min_box=1, margin=0.0)
    assert int(d.scene_ids[-1]) > int(loose.scene_ids[-1])


def test_registry_and_transforms() -> None:
    d = build_dataset("shapes-objects", "val", num_images=5, size=16, scene_size=64)
    assert isinstance(d, ShapesObjects) and len(d) == 5 and d[0][0].shape == (3, 16, 16)

    def flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        return image.flip(-1), target

    plain = ShapesObjects("val", num_images=5, size=16, scene_size=64)
    flipped = ShapesObjects("val", num_images=5, size=16, scene_size=64, transforms=flip)
    assert torch.equal(flipped[2][0], plain[2][0].flip(-1))
    # An item handed out is a copy: editing it does not change the data set.
    image, target = plain[0]
    image.zero_()
    target["labels"].fill_(99)
    assert float(plain[0][0].sum()) > 0 and int(plain[0][1]["labels"]) < 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "training"}, "split"),
        ({"num_images": 0}, "num_images"),
        ({"num_images": 2.5}, "num_images"),
        ({"size": 4}, "size"),
        ({"size": True}, "size"),
        ({"margin": -0.1}, "margin"),
        ({"margin": "wide"}, "margin"),
        ({"min_box": 0}, "min_box"),
        ({"scene_size": 8}, "scene_size"),
        ({"scene_size": 32, "min_box": 40}, "min_box"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapesObjects(**{"num_images": 3, **kwargs})


def test_bad_index_and_unknown_data_arg() -> None:
    d = ShapesObjects("val", num_images=3, scene_size=64)
    with pytest.raises(IndexError, match="out of range"):
        d[3]
    with pytest.raises(TypeError, match="int"):
        d[1.5]  # type: ignore[index]
    assert int(d[-1][1]["image_id"]) == 2
    with pytest.raises(ValueError, match="takes no argument 'side'"):
        build_dataset("shapes-objects", "val", side=32)
