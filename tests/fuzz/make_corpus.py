"""Write the seed corpus ``tests/fuzz/corpus/<target>/`` (run once; the files are committed).

Each layout target's seed is the file it replaces, as the layout builders (the way other tools
write them) or our writers (export, checkpoints) wrote it; the direct targets get a few files
per variant the reader supports (image modes and formats, label map modes, ``.flo`` sizes).

    python -m tests.fuzz.make_corpus
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.data import layout_builders as lb
from tests.fuzz.targets import CORPUS, TARGETS
from tests.fuzz.targets_mot import CORPUS_FILES as MOT_CORPUS_FILES
from tests.fuzz.targets_stereo import CORPUS_FILES


def _png(array: np.ndarray, mode: str | None = None, **save: object) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    im.save(buf, format=save.pop("format", "PNG"), **save)  # type: ignore[arg-type]
    return buf.getvalue()


def _images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    out = {
        "rgb.png": _png(rgb),
        "grey.png": _png(grey),
        "rgba.png": _png(np.dstack([rgb, grey]), "RGBA"),
        "grey16.png": _png((grey.astype(np.uint16) * 257).astype(np.uint16)),
        "rgb.jpg": _png(rgb, format="JPEG", quality=90),
        "progressive.jpg": _png(rgb, format="JPEG", progressive=True),
        "rgb.bmp": _png(rgb, format="BMP"),
        "rgb.gif": _png(rgb, format="GIF"),
        "rgb.tif": _png(rgb, format="TIFF"),
    }
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    out["palette.png"] = buf.getvalue()
    # 16-bit RGB PNG written by hand (Pillow cannot write it): filter byte 0 per row
    h, w = 4, 5
    raw = b"".join(b"\x00" + rng.integers(0, 65535, (w, 3)).astype(">u2").tobytes() for _ in range(h))
    out["rgb16.png"] = _png_bytes(w, h, 16, 2, raw)
    return out


def _png_bytes(w: int, h: int, depth: int, ctype: int, raw: bytes) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _label_maps() -> dict[str, bytes]:
    from structpred.data.formats.labelmap import write_label_map

    labels = torch.zeros(6, 8, dtype=torch.int64)
    labels[1:4, 2:6] = 1
    labels[0, :] = 255
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_label_map(Path(tmp) / "p.png", labels)
        out["palette.png"] = (Path(tmp) / "p.png").read_bytes()
    out["grey.png"] = _png(labels.numpy().astype(np.uint8))
    out["grey16.png"] = _png(labels.numpy().astype(np.uint16))
    out["bilevel.png"] = _png((labels.numpy() == 1), "1")
    # what a label reader must refuse or map explicitly: lossy JPEG, negative int / float TIFF
    out["grey.jpg"] = _png(labels.numpy().astype(np.uint8), format="JPEG")
    out["int32.tif"] = _png(labels.numpy().astype(np.int32) - 1, "I", format="TIFF")
    out["float.tif"] = _png(labels.numpy().astype(np.float32) / 2, "F", format="TIFF")
    return out


def _flo() -> dict[str, bytes]:
    from structpred.data.formats.flo import write_flo

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in ((3, 4), (1, 1)):
            path = Path(tmp) / f"{h}x{w}.flo"
            write_flo(path, torch.arange(2 * h * w, dtype=torch.float32).reshape(2, h, w) / 3)
            out[path.name] = path.read_bytes()
    return out


def _coco_json() -> dict[str, bytes]:
    from structpred.data.formats.coco import write_coco
    from structpred.data.records import Categories, ImageRecord

    names = [f"{i}.jpg" for i in range(2)]
    out = {"tools.json": json.dumps(lb.coco_json(names, 0, 2)).encode()}
    record = ImageRecord(
        "a.png", 20, 30, torch.tensor([[1.0, 2.0, 11.0, 12.0]]), torch.tensor([1]), image_id=7,
        segmentations=[[[1.0, 2.0, 11.0, 2.0, 11.0, 12.0, 1.0, 12.0]]],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        write_coco([record], Categories(["cat"], [3]), Path(tmp) / "ours.json")
        out["ours.json"] = (Path(tmp) / "ours.json").read_bytes()
    return out


def _coco_keypoints_json() -> dict[str, bytes]:
    cat = {
        "id": 1,
        "name": "person",
        "keypoints": ["nose", "left_eye", "right_eye"],
        "skeleton": [[1, 2], [1, 3]],
    }
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
                   {"id": 2, "file_name": "b.jpg", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "area": 80.0, "iscrowd": 0,
             "keypoints": [3, 4, 2, 8, 5, 1, 0, 0, 0], "num_keypoints": 2},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 8, 6], "area": 40.0, "iscrowd": 0,
             "keypoints": [0, 0, 0, 0, 0, 0, 0, 0, 0], "num_keypoints": 0},
        ],
        "categories": [cat],
    }  # fmt: skip
    two = dict(data, categories=[cat, {"id": 2, "name": "box"}])  # a category without keypoints
    two["annotations"] = [
        *data["annotations"],
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 4]},
    ]
    return {"person.json": json.dumps(data).encode(), "two_categories.json": json.dumps(two).encode()}


def _homography_xml() -> dict[str, bytes]:
    """OpenCV's H1to3p.xml as opencv-doc ships it, and a float32 matrix as cv::FileStorage writes one."""
    matrix = (
        '<?xml version="1.0"?>\n<opencv_storage>\n<{name} type_id="opencv-matrix">\n  <rows>3</rows>\n'
        "  <cols>3</cols>\n  <dt>{dt}</dt>\n  <data>\n{data}</data></{name}>\n</opencv_storage>\n"
    )
    graf = (
        "\t7.6285898e-01  -2.9922929e-01   2.2567123e+02\n\t3.3443473e-01   1.0143901e+00  -7.6999973e+01\n"
        "\t3.4663091e-04  -1.4364524e-05   1.0000000e+00 "
    )
    return {
        "graf.xml": matrix.format(name="H13", dt="d", data=graf).encode(),
        "float.xml": matrix.format(
            name="H", dt="f", data="    1.01 0.02 3.5 -0.01 0.99 -2. 1.e-04 0. 1."
        ).encode(),
    }


def _disparity_png() -> dict[str, bytes]:
    """8-bit (Middlebury 2006, 0 = unknown) and 16-bit grey disparity maps."""
    rng = np.random.default_rng(1)
    d8 = rng.integers(0, 80, (6, 8), dtype=np.uint8)
    d8[0, :3] = 0
    return {"d8.png": _png(d8), "d16.png": _png(d8.astype(np.uint16) * 256)}


EXTRA = {
    "image": _images, "label_png": _label_maps, "flo": _flo, "coco_json": _coco_json,
    "coco_keypoints_json": _coco_keypoints_json, "homography_xml": _homography_xml,
    "disparity_png": _disparity_png,
    **CORPUS_FILES,
    **MOT_CORPUS_FILES,
}  # fmt: skip


def main(names: list[str] | None = None) -> None:
    """Rewrite every target's seed folder (only the ``names`` given on the command line, if any)."""
    for target in TARGETS:
        if names and target.name not in names:
            continue
        folder = CORPUS / target.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files: dict[str, bytes] = EXTRA[target.name]() if target.name in EXTRA else {}
        with tempfile.TemporaryDirectory() as tmp:
            path, _ = target.setup(Path(tmp))
            if path.is_file():
                files[f"base{path.suffix}"] = path.read_bytes()
        if target.name == "image_in_layout":
            files.update({k: v for k, v in _images().items() if k in ("rgb.png", "grey.png")})
        if target.name == "yolo_yaml":
            files["ultralytics.yaml"] = (
                b"path: .\ntrain: ../train/images\nval: ../valid/images\nnames:\n  0: cat\n  1: dog\n"
            )
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{target.name}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
