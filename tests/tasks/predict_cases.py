"""Inputs for the predict tests: small videos made with PyAV, and a tiny COCO split on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from structpred.data.images import write_image

CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx", ".avi": "mpeg4"}


def make_video(path: Path, frames: int = 12, height: int = 48, width: int = 64, fps: int = 10) -> Path:
    """A video of ``frames`` frames: a red square moving right over a blue disc moving down."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:height, :width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix], rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            img = np.full((height, width, 3), 40, np.uint8)
            img[(yy - 6 - 2 * t) ** 2 + (xx - 40) ** 2 < 64] = (30, 60, 220)
            img[10:26, 3 * t : 3 * t + 16] = (230, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# Category ids with a gap, not in label order in the file: labels 1, 2 are ids 3, 7.
CATEGORIES = [{"id": 7, "name": "square"}, {"id": 3, "name": "disc"}]
NAMES, IDS = ["disc", "square"], [3, 7]


def make_coco_split(root: Path, num_images: int = 4, split: str = "val", seed: int = 0) -> Path:
    """A COCO split in the ``coco:DIR`` layout (``annotations/<split>.json``, images below ``root``)
    with the data's own image ids (101, 105, ...), gapped category ids, a crowd box and polygon
    masks; objects small, medium and large. Returns the json path."""
    g = torch.Generator().manual_seed(seed)
    H, W = 160, 192
    images, annotations = [], []
    for i in range(num_images):
        image = torch.full((3, H, W), 0.15) + 0.05 * torch.rand(3, H, W, generator=g)
        image_id = 101 + 4 * i
        for k, side in enumerate((14, 50, 110 if i % 2 == 0 else 24)):
            x = int(torch.randint(0, W - side, (1,), generator=g))
            y = int(torch.randint(0, H - side, (1,), generator=g))
            category = CATEGORIES[(i + k) % 2]
            color = (
                torch.tensor([0.9, 0.2, 0.2])
                if category["name"] == "square"
                else torch.tensor([0.2, 0.3, 0.9])
            )
            image[:, y : y + side, x : x + side] = color[:, None, None]
            polygon = [x, y, x + side, y, x + side, y + side, x, y + side]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category["id"],
                "bbox": [x, y, side, side], "area": float(side * side), "iscrowd": int(i == 1 and k == 0),
                "segmentation": [[float(v) for v in polygon]],
            })  # fmt: skip
        file_name = f"{split}/img_{i:03d}.png"
        write_image(root / file_name, image)
        images.append({"id": image_id, "file_name": file_name, "height": H, "width": W})
    path = root / "annotations" / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path
