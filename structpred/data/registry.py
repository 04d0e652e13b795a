"""Datasets by name: the ``--data`` spec of ``structpred train`` / ``eval``.

Specs: ``shapes`` (the built-in shapes world), ``shapes_keypoints`` (the same with named
keypoints, :mod:`structpred.data.shapes_keypoints`), its pairs and clips ``shapes-flow`` (flow pairs),
``shapes-stereo`` (rectified stereo pairs), ``shapes-video`` (clips with tracks; see
:mod:`structpred.data.shapes_views`), ``shapes-motion`` (clips seen by a moving camera, exact
flow both ways; :mod:`.shapes_motion`), ``shapes-objects`` (one shapes-world object crop per item,
:mod:`structpred.data.shapes_objects`), ``digits`` (one real digit per item),
``digits-distorted`` (rotated, scaled, shifted digits, for the STN), sequences ``shakespeare``,
``japanese-vowels``, ``sunspots``, ``adding`` (see :mod:`structpred.data.sequences`),
``digit-canvas`` (scenes of real digits), ``trees`` (DeepForest aerial photos), ``nuclei``
(StarDist's DSB 2018 image), ``track-real`` (single-object tracking sequences rendered from real
video and object crops, exact boxes; :mod:`.track_real`, docs/tracking_data.md), flow pairs
``flow-warped`` (FlyingChairs-style, :mod:`.flow_warped`),
``flow-graf`` / ``flow-stereo`` (real ground truth) and ``flow-frames`` (no ground truth;
:mod:`.flow_real`), stereo pairs ``stereo-real`` (Motorcycle + Aloe with disparity and calibration;
``train`` without ground truth), ``stereo-warped`` (rendered from real photos, exact disparity;
:mod:`.stereo_real`, :mod:`.stereo_warped`), ``stereo-folder:DIR`` (rectified pairs on disk,
docs/depth_data.md), and files on disk in the layouts users have (trees in
``docs/data.md``; :mod:`structpred.data.layouts`): ``coco:DIR|FILE.json`` (COCO tree, labelling
tool exports), ``voc:DIR`` (VOC devkit), ``yolo:DIR|FILE.yaml`` (Ultralytics ``data.yaml``),
``masks:DIR`` (image + label-map folders), ``coco_keypoints:DIR|FILE.json`` (COCO keypoint
files, :mod:`structpred.data.coco_keypoints`); ``structpred data export`` writes the first three.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset


def _shapes(split: str, arg: str, **kw: Any) -> Dataset:
    from .shapes import ShapesWorld

    kw.setdefault("cache", True)  # training reads every item once per epoch: render it once
    return ShapesWorld(split, **kw)


def _shapes_objects(split: str, arg: str, **kw: Any) -> Dataset:
    from .shapes_objects import ShapesObjects

    return ShapesObjects(split, **kw)


def _shapes_keypoints(split: str, arg: str, **kw: Any) -> Dataset:
    from .shapes_keypoints import ShapesKeypoints

    kw.setdefault("cache", True)
    return ShapesKeypoints(split, **kw)


def _shapes_views(name: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        from . import shapes_views

        if name != "ShapesVideo":  # a clip item is ~5x a pair: caching clips is opt-in
            kw.setdefault("cache", True)
        cls: Callable[..., Dataset] = getattr(shapes_views, name)
        return cls(split, **kw)

    return build


def _shapes_motion(split: str, arg: str, **kw: Any) -> Dataset:
    from .shapes_motion import ShapesMotion

    return ShapesMotion(split, **kw)


def _digits(split: str, arg: str, **kw: Any) -> Dataset:
    from .digits import Digits

    return Digits(split, **kw)


def _digits_distorted(split: str, arg: str, **kw: Any) -> Dataset:
    from .distorted import DistortedDigits

    return DistortedDigits(split, **kw)


def _digit_canvas(split: str, arg: str, **kw: Any) -> Dataset:
    from .digits import DigitCanvas

    return DigitCanvas(split, **kw)


def _trees(split: str, arg: str, **kw: Any) -> Dataset:
    from .trees import DeepForestTrees

    return DeepForestTrees(split, **kw)


def _nuclei(split: str, arg: str, **kw: Any) -> Dataset:
    from .nuclei import Nuclei

    return Nuclei(split, **kw)


def _track_real(split: str, arg: str, **kw: Any) -> Dataset:
    from .track_real import RealTrackingBench

    return RealTrackingBench(split, **kw)


def _flow_data(name: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        from . import flow_real, flow_warped

        cls: Callable[..., Dataset] = getattr(flow_warped if name == "WarpedPhotoFlow" else flow_real, name)
        return cls(split, **kw)

    return build


def _stereo_data(name: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        from . import stereo_real, stereo_warped

        module = stereo_warped if name == "WarpedPhotoStereo" else stereo_real
        cls: Callable[..., Dataset] = getattr(module, name)
        return cls(split, **kw)

    return build


def _stereo_folder(split: str, arg: str, **kw: Any) -> Dataset:
    from .stereo_real import open_stereo_folder

    return open_stereo_folder(arg, split, **kw)


def _files(fmt: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        from .layouts import open_layout

        return open_layout(fmt, arg, split, **kw)

    return build


def _coco_keypoints(split: str, arg: str, **kw: Any) -> Dataset:
    from .coco_keypoints import open_coco_keypoints

    return open_coco_keypoints(arg, split, **kw)


def _sequence(name: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        from .sequences import SPECS

        return SPECS[name](split, arg, **kw)

    return build


BUILDERS: dict[str, Callable[..., Dataset]] = {
    "shapes": _shapes,
    "shapes_keypoints": _shapes_keypoints,
    "shapes-objects": _shapes_objects,
    "shapes-flow": _shapes_views("ShapesFlow"),
    "shapes-stereo": _shapes_views("ShapesStereo"),
    "shapes-video": _shapes_views("ShapesVideo"),
    "track-real": _track_real,  # single-object tracking over real video and object crops (track_real)
    "shapes-motion": _shapes_motion,  # clips by a moving camera: flow both ways, camera (shapes_motion)
    "digits": _digits,
    "digits-distorted": _digits_distorted,
    "shakespeare": _sequence("shakespeare"),
    "japanese-vowels": _sequence("japanese-vowels"),
    "sunspots": _sequence("sunspots"),
    "adding": _sequence("adding"),
    "digit-canvas": _digit_canvas,
    "trees": _trees,
    "nuclei": _nuclei,
    "flow-warped": _flow_data("WarpedPhotoFlow"),
    "flow-graf": _flow_data("GrafFlow"),
    "flow-stereo": _flow_data("StereoFlow"),
    "flow-frames": _flow_data("FlowFrames"),
    "stereo-real": _stereo_data("StereoReal"),
    "stereo-warped": _stereo_data("WarpedPhotoStereo"),
    "stereo-folder": _stereo_folder,
    "coco": _files("coco"),
    "voc": _files("voc"),
    "yolo": _files("yolo"),
    "masks": _files("masks"),
    "coco_keypoints": _coco_keypoints,
}
FILE_SPECS = ("coco", "voc", "yolo", "masks", "coco_keypoints", "stereo-folder")
PATH_NOTE = "coco/voc/yolo/masks/stereo-folder take :PATH"


def build_dataset(
    spec: str,
    split: str,
    *,
    task: str | None = None,
    val_fraction: float | None = None,
    split_seed: int = 0,
    **kwargs: Any,
) -> Dataset:
    """The dataset named by ``spec`` (``name`` or ``name:argument``), its ``split``.

    Extra keyword arguments go to the dataset's constructor (e.g. ``num_images`` for shapes;
    ``target`` or ``on_error`` for data on disk). ``task`` (the model's task name) tells data on
    disk which targets to give (boxes, instance masks, label maps); built-in data ignore it.
    ``val_fraction`` / ``split_seed`` carve a deterministic val split out of the train split of
    data on disk that has none (:mod:`structpred.data.layouts.splits`); built-in data have
    their own splits and refuse it.
    """
    if not isinstance(spec, str):
        raise ValueError(f"dataset spec must be a string like 'shapes' or 'coco:DIR', got {spec!r}")
    name, _, arg = spec.partition(":")
    if name not in BUILDERS:
        close = difflib.get_close_matches(name.strip().lower(), list(BUILDERS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0] + (':' + arg if arg else '')!r}? " if close else ""
        raise ValueError(f"unknown dataset {spec!r}; {hint}known: {', '.join(BUILDERS)} ({PATH_NOTE})")
    if arg and name not in FILE_SPECS:  # "shapes:typo" was silently the shapes world
        raise ValueError(f"--data {name} takes no ':{arg}' (only {PATH_NOTE}); use --data-arg K=V")
    try:
        if name in FILE_SPECS:
            split_kw = {"task": task, "val_fraction": val_fraction, "split_seed": split_seed}
            return BUILDERS[name](split, arg, **split_kw, **kwargs)
        if val_fraction is not None:
            raise ValueError(
                f"--val-fraction is for data on disk without a val split (coco:, voc:, yolo:, masks:); "
                f"{name!r} has its own splits"
            )
        return BUILDERS[name](split, arg, **kwargs)
    except TypeError as err:  # a --data-arg the dataset does not take, or of the wrong type
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if bad is not None and bad.group(1) in kwargs:
            key = bad.group(1)
            raise ValueError(f"dataset {name!r} takes no argument {key!r} (--data-arg {key}=...)") from err
        given = {k: v for k, v in kwargs.items() if k not in ("on_error", "target")}
        if not given:
            raise  # no argument of the user's: a bug, keep the traceback
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ValueError(
            f"dataset {name!r} cannot take {shown} ({type(err).__name__}: {err}); check the --data-arg types"
        ) from err
