"""data.augment: each augmentation against a direct reference, the spec, determinism, refusals."""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from structpred.data.augment import (
    Augment,
    AugmentedDataset,
    AugmentSpec,
    augmented,
    canonical_augment,
    color_jitter,
    format_augment,
    hsv_to_rgb,
    item_generator,
    parse_augment,
    rgb_to_hsv,
    zoom_translate,
)


def _item(size: int = 100) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, size, size, generator=g)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [60.0, 50.0, 90.0, 70.0]])
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[m, y1:y2, x1:x2] = 1
    semantic = torch.randint(0, 6, (size, size), generator=g)
    keypoints = torch.tensor([[[12.0, 22.0, 2.0], [28.0, 22.0, 2.0], [0.0, 0.0, 0.0]]] * 2)
    keypoints[1, :, :2] += torch.tensor([50.0, 30.0])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks, "semantic": semantic,
              "keypoints": keypoints, "area": torch.tensor([400.0, 600.0])}  # fmt: skip
    return image, target


# ----------------------------------------------------------------------------- the spec
def test_spec_items_presets_and_canonical_form() -> None:
    assert parse_augment("hflip,scale=0.2,translate=0.2,hsv=0.5") == AugmentSpec(0.5, 0.2, 0.2, 0.5)
    yolo = parse_augment("yolo")
    assert yolo == AugmentSpec(hflip=0.5, scale=0.5, translate=0.1, hsv=0.5, hue=0.015)
    assert parse_augment("yolo, scale=0.3 ,hflip=0") == AugmentSpec(0.0, 0.3, 0.1, 0.5, 0.015)
    assert parse_augment("none") is None and parse_augment("hflip=0") is None
    assert canonical_augment("yolo") == "hflip=0.5,scale=0.5,translate=0.1,hsv=0.5,hue=0.015"
    assert canonical_augment("scale=0.2,min_visible=0.5") == "scale=0.2,min_visible=0.5"
    assert canonical_augment(canonical_augment("yolo_v1")) == canonical_augment("yolo_v1")  # a fixed point
    assert format_augment(None) is None and canonical_augment(None) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur=2", r"--augment blur=2: unknown item 'blur=2' \(fields: hflip"),
        ("scale=2", r"--augment scale=2: scale must be in \[0.0, 0.9\], got 2"),
        ("hflip=x", r"hflip must be a number in \[0.0, 1.0\], got 'x'"),
        ("translate=nan", r"translate must be in \[0.0, 0.5\], got nan"),
        ("hsv=-1", r"hsv must be in \[0.0, 4.0\], got -1"),
        ("", r"--augment: give a comma-separated spec"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_item(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_augment(spec)


# ----------------------------------------------------------------------------- flip
def test_flip_mirrors_boxes_label_maps_and_renames_keypoints() -> None:
    image, target = _item()
    perm = torch.tensor([1, 0, 2])  # points 0 and 1 are a left / right pair
    out_image, out = Augment(AugmentSpec(hflip=1.0), keypoint_flip=perm)(image, target, torch.Generator())
    W = 100
    ref = torch.stack([W - target["boxes"][:, 2], target["boxes"][:, 1], W - target["boxes"][:, 0],
                       target["boxes"][:, 3]], 1)  # fmt: skip
    assert torch.equal(out["boxes"], ref)
    assert torch.equal(out_image, image.flip(-1))
    for i in range(W):  # column j of the flipped map is column W - 1 - j of the original
        assert torch.equal(out["semantic"][:, i], target["semantic"][:, W - 1 - i])
    # the flipped object's point 0 is the original's point 1, mirrored; the unlabelled one stays 0
    kp, kp0 = out["keypoints"], target["keypoints"]
    assert kp[0, 0].tolist() == [W - kp0[0, 1, 0].item(), kp0[0, 1, 1].item(), 2.0]
    assert kp[0, 1].tolist() == [W - kp0[0, 0, 0].item(), kp0[0, 0, 1].item(), 2.0]
    assert kp[0, 2].tolist() == [0.0, 0.0, 0.0]


def test_flip_without_the_keypoint_permutation_is_refused_up_front() -> None:
    class Data(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            return _item()

    with pytest.raises(ValueError, match="--augment hflip=0.5: the data cannot be augmented: .*keypoint_fl"):
        augmented(Data(), "hflip", seed=0)


# ----------------------------------------------------------------------------- zoom and shift
def test_zoom_out_places_the_half_size_image_and_moves_every_target() -> None:
    image, target = _item()
    out_image, out = zoom_translate(image, target, 0.5, 0.1, 0.0, fill=0.25)
    # (100, 100) -> (50, 50) at corner (25 + 10, 25) = (x 35, y 25)
    small = F.interpolate(image[None], size=(50, 50), mode="bilinear", align_corners=False, antialias=True)[0]
    assert torch.allclose(out_image[:, 25:75, 35:85], small)
    assert bool((out_image[:, :25] == 0.25).all()) and bool((out_image[:, :, :35] == 0.25).all())
    ref = target["boxes"] * 0.5 + torch.tensor([35.0, 25.0, 35.0, 25.0])
    assert torch.equal(out["boxes"], ref)
    assert torch.equal(out["area"], target["area"] * 0.25)
    assert bool((out["semantic"][:25] == 255).all()) and bool((out["masks"][:, :25] == 0).all())  # padding
    assert torch.equal(out["semantic"][25:75, 35:85], target["semantic"][1::2, 1::2])  # nearest, centres
    kp = out["keypoints"]
    assert torch.equal(kp[:, :2, :2], target["keypoints"][:, :2, :2] * 0.5 + torch.tensor([35.0, 25.0]))
    assert kp[:, 2].abs().sum() == 0  # unlabelled points stay (0, 0, 0)


def test_zoom_in_clips_boxes_and_drops_objects_that_lose_most_of_their_area() -> None:
    image, target = _item()
    target["boxes"] = torch.tensor([[0.0, 0, 30, 30], [20.0, 20, 50, 50], [40.0, 40, 60, 60]])
    target["labels"] = torch.tensor([1, 2, 3])
    target["area"] = torch.tensor([900.0, 900.0, 400.0])
    masks = torch.zeros(3, 100, 100, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in enumerate(target["boxes"].int().tolist()):
        masks[m, y1:y2, x1:x2] = 1
    target["masks"] = masks
    target["keypoints"] = torch.zeros(3, 3, 3)
    _, out = zoom_translate(image, target, 2.0, 0.0, 0.0)
    # x2: (200, 200), the window [50, 150): box 0 -> [0, 60] keeps 100 / 3600 px: dropped;
    # box 1 -> [40, 100] keeps 50 x 50 of 60 x 60 (0.69): clipped to [0, 50]; box 2 -> [30, 70]
    assert out["labels"].tolist() == [2, 3]
    assert torch.equal(out["boxes"], torch.tensor([[0.0, 0.0, 50.0, 50.0], [30.0, 30.0, 70.0, 70.0]]))
    assert out["masks"].shape == (2, 100, 100) and out["keypoints"].shape == (2, 3, 3)
    assert int(out["masks"][0].sum()) == 50 * 50 and int(out["masks"][1].sum()) == 40 * 40
    _, loose = zoom_translate(image, target, 2.0, 0.0, 0.0, min_visible=0.0)
    assert loose["labels"].tolist() == [1, 2, 3]  # with no threshold only empty boxes go


def test_shift_only_moves_content_and_pads_the_uncovered_band() -> None:
    image, target = _item()
    out_image, out = zoom_translate(image, target, 1.0, -0.2, 0.1)  # 20 px left, 10 px down
    assert torch.equal(out_image[:, 10:, :80], image[:, :90, 20:])
    assert torch.equal(out["semantic"][10:, :80], target["semantic"][:90, 20:])
    assert bool((out["semantic"][:10] == 255).all())
    # box 0 [10, 20, 30, 40] keeps 10 of 20 px of width (0.5 >= 0.25): clipped to [0, 30, 10, 50]
    assert torch.equal(out["boxes"], torch.tensor([[0.0, 30.0, 10.0, 50.0], [40.0, 60.0, 70.0, 80.0]]))


# ----------------------------------------------------------------------------- colour
def test_hsv_conversion_matches_colorsys_and_round_trips() -> None:
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(3, 7, 9, generator=g, dtype=torch.float64)
    rgb[:, 0, 0] = 0.4  # grey: hue and saturation 0
    hsv = rgb_to_hsv(rgb)
    for i in range(7):
        for j in range(9):
            ref = colorsys.rgb_to_hsv(*rgb[:, i, j].tolist())
            assert hsv[:, i, j].tolist() == pytest.approx(ref, abs=1e-12)
    assert torch.allclose(hsv_to_rgb(hsv), rgb, atol=1e-12)


def test_color_jitter_scales_saturation_and_value_and_shifts_hue() -> None:
    g = torch.Generator().manual_seed(2)
    rgb = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64) * 0.6  # two views alike
    assert torch.allclose(color_jitter(rgb, 0.0, 1.0, 1.0), rgb, atol=1e-12)  # identity
    out = color_jitter(rgb, 0.1, 1.2, 0.5)
    ref = rgb.clone()
    for v in range(2):
        for i in range(5):
            for j in range(5):
                h, s, val = colorsys.rgb_to_hsv(*rgb[v, :, i, j].tolist())
                ref[v, :, i, j] = torch.tensor(colorsys.hsv_to_rgb((h + 0.1) % 1, min(s * 1.2, 1), val * 0.5))
    assert torch.allclose(out, ref, atol=1e-12)
    with pytest.raises(ValueError, match="3-channel"):
        color_jitter(torch.rand(1, 4, 4), 0.0, 1.2, 1.0)


# ----------------------------------------------------------------------------- views
def test_stereo_flip_swaps_views_and_a_half_stereo_target_is_refused() -> None:
    g = torch.Generator().manual_seed(3)
    views = torch.rand(2, 3, 8, 12, generator=g)
    disp, disp_r = torch.rand(1, 8, 12, generator=g) * 3, torch.rand(1, 8, 12, generator=g) * 3
    target = {"disparity": disp, "disparity_right": disp_r}
    out_views, out = Augment(AugmentSpec(hflip=1.0))(views, target, torch.Generator())
    assert torch.equal(out_views[0], views[1].flip(-1)) and torch.equal(out_views[1], views[0].flip(-1))
    assert torch.equal(out["disparity"], disp_r.flip(-1))
    assert torch.equal(out["disparity_right"], disp.flip(-1))

    class Half(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            return views, {"disparity": disp}

    with pytest.raises(ValueError, match="cannot be augmented: .*needs both 'disparity' and 'disparity_rig"):
        augmented(Half(), "hflip", seed=0)
    assert augmented(Half(), "scale=0.2,hsv=0.5", seed=0)[0][0].shape == (2, 3, 8, 12)  # no flip: fine


def test_flow_without_a_valid_map_cannot_zoom_out() -> None:
    class Flow(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            return torch.rand(2, 3, 16, 16), {"flow": torch.zeros(2, 16, 16)}

    with pytest.raises(ValueError, match="flow needs target\\['valid'\\]"):
        augmented(Flow(), "scale=0.2", seed=0)
    views, out = augmented(Flow(), "hflip=1", seed=0)[0]  # flipping flow is fine (dx negated)
    assert views.shape == (2, 3, 16, 16) and out["flow"].shape == (2, 16, 16)


# ----------------------------------------------------------------------------- determinism
class _Images(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = torch.full((3, 32, 32), 0.1 * i + 0.1)
        image[:, :, :8] = 0.9  # not symmetric: a flip shows
        return image, {"boxes": torch.tensor([[4.0, 4.0, 20.0, 12.0]]), "labels": torch.tensor([1])}


def test_an_items_draws_depend_on_seed_epoch_and_index_only() -> None:
    data = augmented(_Images(), "yolo", seed=5)
    assert isinstance(data, AugmentedDataset)
    rng = torch.get_rng_state()
    data.set_epoch(2)
    forward = [data[i] for i in range(6)]
    backward = [data[i] for i in reversed(range(6))][::-1]  # any order, any object
    again = augmented(_Images(), "yolo", seed=5)
    again.set_epoch(2)  # type: ignore[attr-defined]
    for (a, ta), (b, _), (c, tc) in zip(forward, backward, [again[i] for i in range(6)], strict=True):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(ta["boxes"], tc["boxes"])
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is never drawn from
    data.set_epoch(3)
    assert not all(torch.equal(forward[i][0], data[i][0]) for i in range(6))  # another epoch, other draws
    other = augmented(_Images(), "yolo", seed=6)
    other.set_epoch(2)  # type: ignore[attr-defined]
    assert not all(torch.equal(forward[i][0], other[i][0]) for i in range(6))
    draws = [torch.rand(4, generator=item_generator(5, 2, 1)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(
        draws[0], torch.rand(4, generator=item_generator(5, 1, 2))
    )


def test_dataloader_workers_draw_what_the_main_process_draws() -> None:
    data = augmented(_Images(), "hflip,scale=0.3,hsv=0.5", seed=1)
    data.set_epoch(4)  # type: ignore[attr-defined]
    main = [data[i][0] for i in range(6)]
    loader = DataLoader(data, batch_size=3, num_workers=1, collate_fn=lambda b: [x[0] for x in b])
    workers = [image for batch in loader for image in batch]
    assert all(torch.equal(a, b) for a, b in zip(main, workers, strict=True))


def test_off_spec_leaves_the_dataset_and_attributes_pass_through() -> None:
    base = _Images()
    assert augmented(base, None, 0) is base and augmented(base, "none", 0) is base
    base.categories = ["a"]  # type: ignore[attr-defined]
    assert augmented(base, "hflip", 0).categories == ["a"]  # type: ignore[attr-defined]
