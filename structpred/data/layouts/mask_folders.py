"""Image + mask folders for semantic segmentation: ``masks:DIR`` (private; see docs/data.md).

``DIR/images/**/<name>.<jpg|png|...>`` pairs with ``DIR/masks/**/<name>.png`` (same relative
path, mask suffix ``.png``, also ``.tif``/``.bmp``/``.gif``): a palette or greyscale PNG whose
pixel values are class indices, 255 = ignore (an RGB mask is read through the VOC palette's
colours). Splits: ``images/train``, ``images/val`` (or
``valid``), ``images/test`` sub-folders when present (masks likewise), else one unsplit set.
Classes: ``DIR/classes.txt`` (one name per line, line k = class k, line 0 the background);
otherwise the largest index over every mask, plus one, named ``class_k``. A mask set holding only
0 and 255 is refused without ``classes.txt`` (a 0/255 binary mask would train on nothing: 255
is ignore).
"""

from __future__ import annotations

from pathlib import Path

from .checks import IMAGE_SUFFIXES, read_lines
from .labelmaps import MAX_CLASSES, LabelMapFiles, check_range, palette_colors, scan_masks
from .splits import UNSPLIT, canonical

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".gif")
MAX_FILES = 1_000_000


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[Path, Path]:
    """Relative path without suffix -> file, for every file below ``folder`` with a suffix."""
    out: dict[Path, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in suffixes or not path.is_file() or path.name.startswith("."):
            continue
        key = path.relative_to(folder).with_suffix("")
        if key in out:
            raise ValueError(f"{path}: two files for {key} ({out[key].name} and {path.name})")
        out[key] = path
        if len(out) > MAX_FILES:
            raise ValueError(f"{folder}: more than {MAX_FILES} files")
    return out


def _split_folders(root: Path) -> dict[str, str]:
    """Canonical split -> sub-folder name of ``images/`` (empty when the data is unsplit)."""
    found: dict[str, str] = {}
    for sub in sorted(p for p in (root / "images").iterdir() if p.is_dir()):
        split = canonical(sub.name)
        if split in ("train", "val", "test"):
            if split in found:
                raise ValueError(
                    f"{root / 'images'}: both {found[split]}/ and {sub.name}/ are the {split} split"
                )
            found[split] = sub.name
    return found if "train" in found else {}


class MaskFolders:
    """The pairs of a ``masks:DIR`` folder, split and checked once (every mask decoded once)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise ValueError(f"masks:{root}: not a directory")
        for sub in ("images", "masks"):
            if not (root / sub).is_dir():
                raise ValueError(
                    f"masks:{root}: no {sub}/ folder (expected {root}/images/ and {root}/masks/)"
                )
        self.root = root
        self.folders = _split_folders(root)
        self.pairs: dict[str, list[tuple[Path, Path]]] = {}
        for split, sub in (self.folders or {UNSPLIT: ""}).items():
            self.pairs[split] = self._pairs(root / "images" / sub, root / "masks" / sub)
        every = [pair for pairs in self.pairs.values() for pair in pairs]
        classes = root / "classes.txt"
        names = read_lines(classes) if classes.is_file() else None
        if names is not None and (not 2 <= len(names) <= MAX_CLASSES or len(set(names)) != len(names)):
            raise ValueError(
                f"{classes}: needs 2..{MAX_CLASSES} unique names (line k = class k), got {len(names)}"
            )
        self.colors = palette_colors(len(names) if names else MAX_CLASSES)  # for RGB masks
        maxima, seen, sizes = scan_masks(every, self.colors)
        self.sizes = dict(zip(every, sizes, strict=True))
        if names is not None:
            check_range(every, maxima, len(names), str(classes))
            self.num_classes, self.names = len(names), names[1:]
        else:
            if every and seen <= {0, 255}:
                raise ValueError(
                    f"masks:{root}: every mask holds only 0 and 255 (255 = ignore): for a binary mask "
                    "write 0/1, or add classes.txt"
                )
            self.num_classes = max(max(maxima, default=0), 1) + 1
            self.names = [f"class_{k}" for k in range(1, self.num_classes)]

    def _pairs(self, images: Path, masks: Path) -> list[tuple[Path, Path]]:
        if not masks.is_dir():
            raise ValueError(f"{masks}: not found (the masks of {images})")
        image_files, mask_files = _files(images, IMAGE_SUFFIXES), _files(masks, MASK_SUFFIXES)
        for key, path in image_files.items():
            if key not in mask_files:
                raise ValueError(
                    f"{path}: no mask {masks / key}.png (masks pair with images by relative path)"
                )
        for key, path in mask_files.items():
            if key not in image_files:
                raise ValueError(f"{path}: no image {images / key}.<jpg|png|...> for this mask")
        return [(image_files[k], mask_files[k]) for k in sorted(image_files)]

    def available(self) -> list[str]:
        """Splits present (``['all']`` when unsplit)."""
        return sorted(self.pairs)

    def dataset(self, split: str) -> LabelMapFiles:
        """The pairs of ``split`` (one of :meth:`available`)."""
        pairs = self.pairs[split]
        sizes = [self.sizes[p] for p in pairs]
        return LabelMapFiles(pairs, self.names, self.num_classes, sizes, self.colors)
