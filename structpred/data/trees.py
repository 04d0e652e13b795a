"""Tree crowns in aerial photos: the 4 annotated photos shipped in ``deepforest==2.1.0``.

Files (``<site-packages>/deepforest/data/``, Pascal VOC xml beside each png; MIT licence):

| photo | H x W | boxes | split |
|---|---|---|---|
| ``2019_YELL_2_528000_4978000_image_crop2`` | 2472 x 2299 | 574 | rows [0, 2072) train, [2072, 2472) val |
| ``2019_YELL_2_541000_4977000_image_crop`` | 1035 x 1249 | 279 | test (whole photo) |
| ``OSBS_029`` | 400 x 400 | 61 | train |
| ``SOAP_061`` | 400 x 400 | 37 (classes "Alive"/"Dead") | train |

Boxes are read as the files give them (0-based pixel edges, up to ``xmax = W``) by
:func:`~structpred.data.formats.voc.read_voc`. ``OSBS_029.xml`` names its image ``OSBS_029.tif``
(an LZW tif, which needs ``imagecodecs``): every photo is read from the png of the xml's stem.
Every class is mapped to one category, ``"Tree"`` (label 1). The split is fixed and does not
depend on ``tile``: the test photo is never seen in training, and the big photo is cut at row
2072 into a train band and a 400-row val band; tiles are laid *inside* a band, so no pixel is in
two splits (a crown crossing the cut is clipped in both bands by the rule below).

Tiling: ``tile x tile`` windows every ``stride`` pixels; the last row/column of windows is
shifted back to end at the band's edge (:func:`~structpred.data.real.grid_starts`), so every
tile is full size, unpadded, and may overlap its neighbour (a box in the overlap then appears in
both tiles). A box is clipped to its tile and kept iff its visible part is at least
``min_visibility`` of its full area *and* at least ``min_size`` pixels wide and high.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..ops import box_area, clip_boxes_to_image
from .images import open_image
from .limits import LimitError
from .real import SPLITS, Transform, check_file, check_split, grid_starts, package_data_dir
from .records import Categories, ImageRecord

logger = logging.getLogger(__name__)

PACKAGE_PIN = "deepforest==2.1.0"
BIG = "2019_YELL_2_528000_4978000_image_crop2"
TEST_PHOTO = "2019_YELL_2_541000_4977000_image_crop"
PHOTOS = (BIG, TEST_PHOTO, "OSBS_029", "SOAP_061")
CLASS_MAP = {"Tree": "Tree", "Alive": "Tree", "Dead": "Tree"}
VAL_ROW = 2072  # rows [VAL_ROW, 2472) of BIG are the val band: 400 rows, one row of 400-px tiles

# Per split, the bands (photo, first row, end row or None = bottom) its tiles are laid in.
SPLIT_BANDS: dict[str, tuple[tuple[str, int, int | None], ...]] = {
    "train": ((BIG, 0, VAL_ROW), ("OSBS_029", 0, None), ("SOAP_061", 0, None)),
    "val": ((BIG, VAL_ROW, None),),
    "test": ((TEST_PHOTO, 0, None),),
}


@dataclass(frozen=True)
class Tile:
    """One crop: ``photo`` name, its top-left ``(y0, x0)`` in the photo, ``size`` (square) and
    ``boxes (Tensor[N, 4])`` float32 xyxy in tile pixels, already clipped and filtered."""

    photo: str
    y0: int
    x0: int
    size: int
    boxes: Tensor


def data_dir() -> Path:
    """``<site-packages>/deepforest/data``; ``FileNotFoundError`` if deepforest is not installed."""
    return package_data_dir("deepforest", "data", pin=PACKAGE_PIN)


def read_photos(root: str | Path | None = None) -> dict[str, ImageRecord]:
    """The 4 photos' annotations, ``{photo name: ImageRecord}``, all labels 1 (``"Tree"``).

    ``root`` is the folder holding ``<photo>.png`` + ``<photo>.xml`` (default: :func:`data_dir`).
    Reader errors (broken xml, unknown class...) propagate from ``read_voc``.
    """
    from .formats.voc import read_voc  # the VOC reader is parsed with defusedxml

    folder = Path(root) if root is not None else data_dir()
    categories = Categories(["Tree"])
    records = {}
    for name in PHOTOS:
        xml = check_file(folder / f"{name}.xml")
        record = read_voc(xml, categories=categories, class_map=CLASS_MAP)
        records[name] = record
    return records


def crop_boxes(
    boxes: Tensor, y0: int, x0: int, size: int, min_visibility: float = 0.5, min_size: float = 4.0
) -> tuple[Tensor, Tensor]:
    """Clip xyxy ``boxes (Tensor[N, 4])`` to the window ``[x0, x0 + size) x [y0, y0 + size)``.

    Returns ``(boxes float32[K, 4]`` in window pixels, ``keep int64[K])`` indices of the kept
    input boxes: those whose clipped area is ``>= min_visibility`` x their own area and whose
    clipped width and height are ``>= min_size``.
    """
    shifted = boxes.float() - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)  # (N, 4)
    clipped = clip_boxes_to_image(shifted, (size, size))  # (N, 4)
    area = box_area(shifted)
    visible = box_area(clipped)
    wide = clipped[:, 2] - clipped[:, 0] >= min_size
    high = clipped[:, 3] - clipped[:, 1] >= min_size
    keep = torch.where((visible >= min_visibility * area) & (visible > 0) & wide & high)[0]
    return clipped[keep], keep


def tile_band(
    record: ImageRecord,
    rows: tuple[int, int | None],
    tile: int,
    stride: int,
    min_visibility: float = 0.5,
    min_size: float = 4.0,
) -> list[Tile]:
    """Tiles of the band ``rows = (first, end or None)`` of one photo, in row-major order."""
    top, bottom = rows[0], record.height if rows[1] is None else rows[1]
    if not 0 <= top < bottom <= record.height:
        raise ValueError(f"{record.file_name}: rows {rows} are not a band of a {record.height}-row photo")
    name = Path(record.file_name).stem
    tiles = []
    for y in grid_starts(bottom - top, tile, stride):
        for x in grid_starts(record.width, tile, stride):
            boxes, _ = crop_boxes(record.boxes, top + y, x, tile, min_visibility, min_size)
            tiles.append(Tile(name, top + y, x, tile, boxes))
    return tiles


def load_photo(path: Path) -> Tensor:
    """An RGB photo as ``uint8[3, H, W]``; ``ValueError`` naming the file if it cannot be decoded."""
    check_file(path)
    try:
        with open_image(path, "photo") as im:  # header size checked against limits.max_pixels first
            pixels = np.asarray(im.convert("RGB"))  # (H, W, 3)
    except LimitError:
        raise
    except ValueError as err:  # open_image's message starts with the path
        raise ValueError(f"{path}: cannot decode image ({str(err).removeprefix(f'{path}: ')})") from err
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


class DeepForestTrees(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Tiles of DeepForest's aerial photos with tree-crown boxes (one class, ``"Tree"``).

    Item ``i``: ``(image float32[3, tile, tile] in [0, 1], target)`` with ``boxes float32[N, 4]``
    xyxy tile pixels, ``labels int64[N]`` (all 1), ``iscrowd uint8[N]`` (all 0) and
    ``image_id`` (int64 scalar, unique across the three splits for given tiling arguments).
    ``tiles[i]`` tells where the tile comes from. Photos are decoded on first use and cached.

    Args:
        split: ``"train"`` (38 tiles of 400 px), ``"val"`` (6) or ``"test"`` (12); see the module doc.
        tile: tile side in pixels, 32..400 (the small photos are 400 x 400).
        stride: pixels between tile origins (default ``tile``: no overlap but the shifted last one).
        min_visibility: keep a clipped box iff at least this fraction of it is inside the tile.
        min_size: ... and its visible width and height are at least this many pixels.
        root: folder with the png + xml files (default: the installed ``deepforest/data``).
        transforms: optional joint transform applied to ``(image, target)``.
    """

    categories = Categories(["Tree"])

    def __init__(
        self,
        split: str = "train",
        tile: int = 400,
        stride: int | None = None,
        min_visibility: float = 0.5,
        min_size: float = 4.0,
        root: str | Path | None = None,
        transforms: Transform | None = None,
    ) -> None:
        check_split(split)
        if not isinstance(tile, int) or not 32 <= tile <= 400:
            raise ValueError(f"tile must be an int in [32, 400] (two photos are 400 px), got {tile!r}")
        stride = tile if stride is None else stride
        if not isinstance(stride, int) or not 1 <= stride <= tile:
            raise ValueError(f"stride must be an int in [1, tile={tile}], got {stride!r}")
        if not 0.0 < min_visibility <= 1.0:
            raise ValueError(f"min_visibility must be in (0, 1], got {min_visibility}")
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}")
        self.split = split
        self.root = Path(root) if root is not None else data_dir()
        self.transforms = transforms
        records = read_photos(self.root)
        for name, record in records.items():
            if Path(record.file_name).stem != name:
                # The tile's photo name comes from the xml; a mismatch would load the wrong png.
                raise ValueError(f"{self.root / name}.xml names the image {record.file_name!r}")
        self.tiles: list[Tile] = [
            t
            for photo, top, end in SPLIT_BANDS[split]
            for t in tile_band(records[photo], (top, end), tile, stride, min_visibility, min_size)
        ]
        # image ids: the splits' tiles numbered one after the other in SPLITS order.
        offset = 0
        for other in SPLITS[: SPLITS.index(split)]:
            for photo, top, end in SPLIT_BANDS[other]:
                bottom = records[photo].height if end is None else end
                offset += len(grid_starts(bottom - top, tile, stride)) * len(
                    grid_starts(records[photo].width, tile, stride)
                )
        self._first_id = offset
        self._sizes = {name: (r.height, r.width) for name, r in records.items()}
        self._photos: dict[str, Tensor] = {}
        logger.info("DeepForestTrees(%s): %d tiles, %d boxes", split, len(self.tiles), self.num_boxes())

    def num_boxes(self) -> int:
        """Boxes over all tiles (a box in the overlap of two tiles counts twice)."""
        return sum(len(t.boxes) for t in self.tiles)

    def photo(self, name: str) -> Tensor:
        """The decoded photo ``uint8[3, H, W]`` (cached); ``ValueError`` if its size is not the xml's."""
        if name not in self._photos:
            pixels = load_photo(self.root / f"{name}.png")
            if tuple(pixels.shape[1:]) != self._sizes[name]:
                raise ValueError(
                    f"{self.root / name}.png is {tuple(pixels.shape[1:])} (H, W) "
                    f"but its xml says {self._sizes[name]}"
                )
            self._photos[name] = pixels
        return self._photos[name]

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"tile {index} out of range for {len(self)} tiles")
        index %= len(self)
        t = self.tiles[index]
        crop = self.photo(t.photo)[:, t.y0 : t.y0 + t.size, t.x0 : t.x0 + t.size]  # (3, tile, tile)
        image = crop.float() / 255.0
        n = len(t.boxes)
        target = {
            "boxes": t.boxes.clone(),
            "labels": torch.ones(n, dtype=torch.int64),
            "iscrowd": torch.zeros(n, dtype=torch.uint8),
            "image_id": torch.tensor(self._first_id + index, dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
