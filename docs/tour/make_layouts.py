"""Write small datasets in the layouts other tools write (not ours) under OUT, for the README's
own-data transcript (``docs/tour/own_data.sh``): a Roboflow COCO export, a Pascal VOC devkit, an
Ultralytics YOLO folder, image + mask folders, and one broken copy of each.

    python docs/tour/make_layouts.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the clone's root: tests.data
from tests.data import layout_builders as lb  # noqa: E402


def main(out: Path) -> None:
    """The four layouts and their broken copies under ``out``."""
    lb.coco_roboflow(out / "roboflow-coco", n_train=12, n_val=4)
    lb.voc_devkit(out / "voc", n_train=12, n_val=4)  # voc/VOCdevkit/VOC2012/...
    lb.yolo_ultralytics(out / "ultralytics-yolo", n_train=12, n_val=4)
    lb.mask_folders(out / "image-mask", n_train=12, n_val=4)
    for kind in ("coco-missing-image", "voc-unknown-class", "yolo-class", "masks-index"):
        spec, _, _ = lb.break_layout(kind, out / "broken" / kind)
        print(kind, spec)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
