"""Users' COCO keypoint files as a dataset: ``--data coco_keypoints:FILE.json|DIR``.

``FILE.json`` is one ``person_keypoints_*.json``-style file (the unsplit data: carve a val split
with ``--val-fraction``). ``DIR`` holds one file per split, ``person_keypoints_<split>*.json``
in ``DIR`` or ``DIR/annotations`` (COCO 2017's tree: ``person_keypoints_train2017.json`` ->
train). Images are looked up as ``coco:`` does (:mod:`structpred.data.layouts.coco_tree`).
A separate spec rather than detecting keypoints in ``coco:``: ``coco:`` deliberately skips
``person_keypoints_*`` files in a COCO tree (the instances files hold the same images), and a
keypoint model must get keypoint targets or fail at once.

Items are ``(image, target)`` with ``coco:``'s detection target plus ``keypoints`` float32
``[N, K, 3]`` (:mod:`structpred.data.formats.coco_keypoints`). The dataset exposes
``categories``, ``keypoint_names`` (the file's), ``keypoint_sigmas`` (COCO's 17 person sigmas
when the file has COCO's 17 person keypoints, else 0.05 each, or ``keypoint_sigmas=`` given
with ``--data-arg``), ``keypoint_flip`` (left_* <-> right_* by name) and ``skeleton``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from .formats.coco_keypoints import keypoints_for

# COCO's person keypoints, in COCO's order (their sigmas: metrics.keypoints.COCO_PERSON_SIGMAS).
COCO_PERSON_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
DEFAULT_SIGMA = 0.05


class CocoKeypoints(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """One COCO keypoint json and its images (see the module docstring).

    Args:
        json_path: the keypoint json.
        split: the split it holds (its image folder is looked for by that name).
        root: the dataset folder (default: the json's folder).
        on_error: ``"skip"`` leaves out (and logs) bad annotations instead of raising.
        keypoint_sigmas: OKS sigmas, one per keypoint (default: see the module docstring).
    """

    def __init__(
        self,
        json_path: str | Path,
        split: str = "all",
        root: str | Path | None = None,
        on_error: str = "raise",
        keypoint_sigmas: Sequence[float] | None = None,
    ) -> None:
        from .layouts.coco_tree import open_coco

        path = Path(json_path)
        self.base = open_coco(path, Path(root) if root is not None else path.parent, split, False, on_error)
        self.keypoints, info = keypoints_for(path, self.base.records, self.base.categories, on_error)
        self.categories = self.base.categories
        self.keypoint_names: list[str] = list(info.names)
        K = len(self.keypoint_names)
        if keypoint_sigmas is None:
            from ..metrics.keypoints import coco_person_sigmas

            person = tuple(self.keypoint_names) == COCO_PERSON_KEYPOINTS
            keypoint_sigmas = coco_person_sigmas().tolist() if person else [DEFAULT_SIGMA] * K
        sigmas = [float(s) for s in keypoint_sigmas]
        if len(sigmas) != K or not all(s > 0 for s in sigmas):
            raise ValueError(
                f"{path}: keypoint_sigmas must be {K} values > 0 (one per keypoint), got {sigmas}"
            )
        self.keypoint_sigmas = sigmas
        self.keypoint_flip: list[int] = list(info.flip)
        self.skeleton: list[tuple[int, int]] = list(info.skeleton)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.base[index]
        i = index % len(self.base) if isinstance(index, int) and index < 0 else index
        target["keypoints"] = self.keypoints[i].clone()
        return image, target


def keypoint_files(arg: Path) -> dict[str, Path]:
    """Split name -> keypoint json of ``coco_keypoints:ARG`` (``{'all': json}`` for one file)."""
    from .layouts.splits import UNSPLIT, canonical

    if arg.is_file():
        return {UNSPLIT: arg}
    if not arg.is_dir():
        raise ValueError(f"coco_keypoints:{arg}: no such directory or json file")
    found = sorted(arg.glob("person_keypoints_*.json")) + sorted(
        arg.glob("annotations/person_keypoints_*.json")
    )
    out: dict[str, Path] = {}
    for p in found:
        split = canonical(p.name.removesuffix(".json").removeprefix("person_keypoints_"))
        if split in out:
            raise ValueError(f"coco_keypoints:{arg}: several keypoint files for split {split!r}; name one")
        out[split] = p
    if not out:
        raise ValueError(f"coco_keypoints:{arg}: no person_keypoints_<split>*.json in it or in annotations/")
    return out


def open_coco_keypoints(
    arg: str,
    split: str,
    *,
    task: str | None = None,
    val_fraction: float | None = None,
    split_seed: int = 0,
    on_error: str = "raise",
    **kwargs: Any,
) -> Dataset[Any]:
    """``--data coco_keypoints:ARG``'s split ``split`` (``task`` is accepted and not needed)."""
    from .layouts.splits import serve

    where = f"coco_keypoints:{arg}"
    if not arg:
        raise ValueError("--data coco_keypoints:PATH needs a keypoint json or a directory")
    path = Path(arg).expanduser()
    files = keypoint_files(path)
    root = path if path.is_dir() else path.parent

    def build(s: str) -> Dataset[Any]:
        return CocoKeypoints(files[s], s, root=root, on_error=on_error, **kwargs)

    return serve(sorted(files), split, val_fraction, split_seed, where, build)
