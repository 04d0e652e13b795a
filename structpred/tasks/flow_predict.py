"""``structpred predict`` for optical flow: frame pairs -> ``.flo`` + colour PNG; videos -> drawn
point trajectories.

The pair rule: **image inputs, in the order given, are one sequence of frames** (a folder's
images in sorted order, a glob's matches sorted), and each image with the next one is a pair
(``a.png b.png c.png`` gives the flows a -> b and b -> c). Two files are one pair; a folder of
frames gives the flow between every two consecutive frames. Each pair writes, under ``--out``,
``<stem of its first frame>.flo`` (Middlebury ``.flo``, :mod:`structpred.data.formats.flo`) and
``<stem>_flow.png`` (the colour wheel of :func:`structpred.viz.flow.flow_to_color`).

A **video** is its own sequence: its frames are decoded one at a time (PyAV,
:mod:`.video_frames`), the model runs on each consecutive pair both ways (frame t -> t+1 and
back) and a :class:`~structpred.ops.trajectories.PointTracker` (Sundaram et al. 2010) chains
the flow into trajectories (seeded every 8 px where the frame has texture). Every frame after
the first is written with the living trajectories' last ``TAIL`` positions drawn
(``<video stem>/frame_000123.png``), and with ``--video-out`` also encoded as
``<video stem>_annotated.mp4``.

``predictions.json`` has one row per pair (``file_name``, ``next_file``, ``flo``, ``flow_png``,
``mean_flow``, ``max_flow`` in px) and per video frame (``file_name``, ``frame``, ``time``,
``mean_flow``, ``tracks_alive``); ``images.json`` one entry per written picture.

Bad input is a ``ValueError`` before anything is written: a single image and no video (no
pair), consecutive images of different sizes (naming both files); :func:`check_pair` also
refuses frames that are not ``[3, H, W]`` or hold NaN (the Python entry :func:`predict_pair`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.formats.flo import write_flo
from ..data.images import image_size, read_image
from ..ops.trajectories import PointTracker
from ..progress import Progress, progress
from ..viz import save_png
from ..viz.flow import flow_to_color
from ..viz.trajectories import draw_tracks
from .base import PredictJob
from .outputs import write_json
from .video_frames import VideoWriter, is_video, iter_frames, probe_video

logger = logging.getLogger(__name__)
TAIL = 10  # frames of history drawn behind each tracked point
SPACING = 8  # px between seeded points (the paper's)
MIN_TEXTURE = 1e-3  # no seeds in flat areas (structure tensor, relative to the frame's strongest corner)


def check_pair(frame0: Tensor, frame1: Tensor, where: str = "frames") -> None:
    """``ValueError`` unless both frames are finite float ``[3, H, W]`` of one size."""
    for name, f in (("frame0", frame0), ("frame1", frame1)):
        if not isinstance(f, Tensor) or f.dim() != 3 or f.shape[0] != 3:
            shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"{where}: {name} must be an RGB image Tensor[3, H, W], got {shape}")
        if not f.is_floating_point():
            raise ValueError(f"{where}: {name} must be float in [0, 1], got {f.dtype}")
        if not torch.isfinite(f).all():
            raise ValueError(f"{where}: {name} holds NaN or inf")
    if frame0.shape != frame1.shape:
        raise ValueError(
            f"{where}: the two frames of a pair must have one size, got {tuple(frame0.shape[1:])} and "
            f"{tuple(frame1.shape[1:])} (H, W)"
        )


def predict_pair(model: nn.Module, frame0: Tensor, frame1: Tensor, input_size: int | None = None) -> Tensor:
    """The model's flow from ``frame0`` to ``frame1`` (both ``float[3, H, W]`` in [0, 1]) -> ``[2, H, W]``.

    ``input_size``: the model runs on frames resampled to this longer side (the run's recorded
    ``--image-size``); the flow comes back at ``H x W``, its vectors rescaled.
    """
    check_pair(frame0, frame1)
    _, H, W = frame0.shape
    pair = torch.stack([frame0, frame1])  # (2, 3, H, W)
    if input_size is not None:
        scale = input_size / max(H, W)
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        pair = F.interpolate(pair, size=size, mode="bilinear", align_corners=False, antialias=True)
    preds, _ = model([pair])
    flow = preds["flow"][0].float()  # (2, h, w)
    h, w = flow.shape[-2:]
    if (h, w) != (H, W):
        flow = F.interpolate(flow[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        flow = flow * torch.tensor([W / w, H / h], device=flow.device).view(2, 1, 1)
    if not torch.isfinite(flow).all():
        raise ValueError("the model's flow holds NaN or inf (check the checkpoint and the input size)")
    return flow


def _stats(flow: Tensor) -> dict[str, float]:
    mag = flow.norm(dim=0)
    return {"mean_flow": round(float(mag.mean()), 4), "max_flow": round(float(mag.max()), 4)}


def _check_inputs(job: PredictJob) -> None:
    """The pair rule's refusals, from the headers alone (before any output)."""
    images = [p for p in job.paths if not is_video(p)]
    if len(images) == 1 and len(images) == len(job.paths):
        raise ValueError(
            f"{images[0]}: optical flow needs frame pairs, got one image (give two or more frames in "
            "order, a folder of frames, or a video)"
        )
    if len(images) == 1:
        raise ValueError(
            f"{images[0]}: a single image among videos has no partner frame (images in the order given "
            "are paired with the next one)"
        )
    sizes = [image_size(p) for p in images]
    for k in range(len(images) - 1):
        if sizes[k] != sizes[k + 1]:
            raise ValueError(
                f"{images[k]} is {sizes[k][0]} x {sizes[k][1]} but the next frame {images[k + 1]} is "
                f"{sizes[k + 1][0]} x {sizes[k + 1][1]} (H x W): the frames of a pair must have one size"
            )


class _Out:
    """The json rows and entries written at the end (also when the run stops early)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def finish(self) -> Path:
        write_json(self.out / "images.json", self.images)
        path = self.out / "predictions.json"
        write_json(path, self.rows)
        return path


def _pairs(model: nn.Module, job: PredictJob, images: list[tuple[Path, Path]], sink: _Out, bar: Any) -> None:
    device = next(iter(model.parameters()), torch.empty(0)).device
    previous: tuple[Path, Path, Tensor] | None = None
    for path, stem in images:
        frame = read_image(path).to(device)
        if previous is not None:
            path0, stem0, frame0 = previous
            check_pair(frame0, frame, f"{path0} -> {path}")
            flow = predict_pair(model, frame0, frame, job.input_size).cpu()
            flo, png = job.out / f"{stem0}.flo", job.out / f"{stem0}_flow.png"
            flo.parent.mkdir(parents=True, exist_ok=True)
            write_flo(flo, flow)
            save_png(png, flow_to_color(flow))
            _, H, W = flow.shape
            rel = {"flo": f"{stem0}.flo", "flow_png": f"{stem0}_flow.png"}
            sink.rows.append({"file_name": str(path0), "next_file": str(path), **rel, **_stats(flow)})
            sink.images.append({"id": len(sink.images), "file_name": str(path0), "next_file": str(path),
                                "height": H, "width": W, "output": rel["flow_png"]})  # fmt: skip
            bar.update(1)
        previous = (path, stem, frame)


def _video(model: nn.Module, job: PredictJob, path: Path, stem: Path, sink: _Out, bar: Any) -> None:
    device = next(iter(model.parameters()), torch.empty(0)).device
    tracker = PointTracker(spacing=SPACING, min_texture=MIN_TEXTURE, max_history=TAIL)  # any video length
    writer = VideoWriter(job.out / f"{stem}_annotated.mp4", probe_video(path).fps) if job.video_out else None
    previous: Tensor | None = None
    try:
        for index, time, frame in iter_frames(path):
            frame = frame.to(device)
            if previous is not None:
                where = f"{path} frames {index - 1} -> {index}"
                check_pair(previous, frame, where)
                fw = predict_pair(model, previous, frame, job.input_size).cpu()
                bw = predict_pair(model, frame, previous, job.input_size).cpu()
                tracker.step(fw, bw, frames=(previous.cpu(), frame.cpu()))
                recent = tracker.recent(TAIL)  # (N, L, 2), the last column = this frame
                picture = draw_tracks(frame.cpu(), recent, frame=recent.shape[1] - 1)
                name = f"{stem}/frame_{index:06d}.png"
                save_png(job.out / name, picture)
                if writer is not None:
                    writer.write(picture)
                _, H, W = frame.shape
                head = {"file_name": str(path), "frame": index, "time": round(time, 6)}
                sink.rows.append({**head, **_stats(fw), "tracks_alive": tracker.num_alive})
                sink.images.append({"id": len(sink.images), **head, "height": H, "width": W, "output": name})
            bar.update(1)
            previous = frame
    finally:
        if writer is not None:
            writer.close()
    if previous is not None and tracker.frame == 0:
        raise ValueError(f"{path}: the video has one frame: no pair to compute a flow on")


def predict_flow_files(model: nn.Module, job: PredictJob) -> Path:
    """Run a flow model on ``job.paths`` by the pair rule (module docstring); returns
    ``predictions.json``'s path."""
    _check_inputs(job)
    job.out.mkdir(parents=True, exist_ok=True)
    sink = _Out(job.out)
    stems = list(job.stems) if job.stems else [Path(p.stem) for p in job.paths]
    images = [(p, s) for p, s in zip(job.paths, stems, strict=True) if not is_video(p)]
    bar: Progress[Any] = progress(None, total=job.total or None, desc="predict", enabled=job.progress)
    try:
        with torch.no_grad():
            _pairs(model, job, images, sink, bar)
            for p, s in zip(job.paths, stems, strict=True):
                if is_video(p):
                    _video(model, job, p, s, sink, bar)
    finally:
        path = sink.finish()
        bar.close()
    logger.info("%d flow pictures -> %s", len(sink.images), job.out)
    return path
