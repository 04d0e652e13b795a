"""Video files for ``structpred predict``: probe, decode frame by frame, encode an annotated copy.

PyAV (the ``video`` extra: ``pip install structpred[video]``) is imported only when a video is
met, with a clear error when it is missing. Frames are decoded one at a time (the caller batches
them), so a video of any length is never held in memory.

Convention: a frame is ``float32 Tensor[3, H, W]`` in ``[0, 1]`` (RGB), like an image file;
its index counts decoded frames from 0 and its time is the presentation time in seconds
(``frame.time``, or ``index / fps`` when the container gives none).

A bad video is a ``ValueError`` naming the file: not a video (or no video stream), a frame size
over ``limits.max_pixels`` (checked from the header, before decoding), no frame,
a decoding error, or a truncated file (fewer frames than the container declares, or decoding
ending well before the container's duration).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import limits

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def is_video(path: Path) -> bool:
    """True when ``path``'s suffix is one of :data:`VIDEO_SUFFIXES`."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def _av() -> Any:
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is pinned in the dev environment
        raise ValueError(
            "video input needs PyAV: pip install 'structpred[video]' (or pip install av)"
        ) from err
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says before decoding."""

    frames: int  # declared frame count; 0 when the container does not say
    fps: float  # average frame rate; 0.0 when unknown
    duration: float  # seconds; 0.0 when unknown
    height: int
    width: int


def _open(path: Path) -> Any:
    av = _av()
    if not path.is_file():
        raise ValueError(f"{path}: video file not found")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise ValueError(
            f"{path}: not a readable video ({type(err).__name__}: {err.strerror or err})"
        ) from err


def _info(path: Path, container: Any) -> VideoInfo:
    if not container.streams.video:
        raise ValueError(f"{path}: the file holds no video stream (truncated or not a video)")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    duration = container.duration / 1_000_000 if container.duration else 0.0  # microseconds -> s
    # a frame is decoded whole: its declared size is checked before the first decode
    limits.check("max_pixels", int(stream.height) * int(stream.width), path,
                 f"frame size {stream.height} x {stream.width} (H x W)")  # fmt: skip
    return VideoInfo(
        int(stream.frames or 0), float(rate or 0.0), float(duration), stream.height, stream.width
    )


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path``'s header (no decoding); ``ValueError`` unless it holds a video stream."""
    path = Path(path)
    with _open(path) as container:
        return _info(path, container)


def iter_frames(path: str | Path) -> Iterator[tuple[int, float, Tensor]]:
    """Decode ``path`` frame by frame: ``(index, time in seconds, float32[3, H, W])``.

    Raises ``ValueError`` naming the file (and the frame) for a bad or truncated video, or one
    with no frame; frames before the problem have already been yielded.
    """
    av = _av()
    path = Path(path)
    with _open(path) as container:
        info = _info(path, container)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count, last_time = 0, 0.0
        try:
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)  # -> (3, H, W)
                time = float(frame.time) if frame.time is not None else count / (info.fps or 1.0)
                yield count, time, pixels.float().div_(255.0)
                count, last_time = count + 1, time
        except av.FFmpegError as err:
            raise ValueError(f"{path}: decoding failed after frame {count}: {err}") from err
    if count == 0:
        raise ValueError(f"{path}: no frame could be decoded (empty or truncated video)")
    if info.frames and count < info.frames:
        raise ValueError(f"{path}: truncated: decoded {count} frames, the container declares {info.frames}")
    step = 1.0 / info.fps if info.fps else 0.0
    if info.duration and step and last_time + step < info.duration - 1.5 * step:
        raise ValueError(
            f"{path}: truncated: decoding stopped at {last_time + step:.2f} s of {info.duration:.2f} s "
            f"({count} frames)"
        )


class VideoWriter:
    """Encode ``uint8[3, H, W]`` frames into a video (H.264 when PyAV has it, else MPEG-4).

    The first frame fixes the size; odd sizes are padded by one pixel (4:2:0 needs even ones).
    Use as a context manager; the file is complete once it is closed.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        av = _av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        self._codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._fps = fps if fps > 0 else 25.0
        self._stream: Any = None
        self.frames = 0

    def write(self, image: Tensor) -> None:
        """Append one frame, ``uint8[3, H, W]``."""
        av = _av()
        _, H, W = image.shape
        if self._stream is None:
            from fractions import Fraction

            self._stream = self._container.add_stream(
                self._codec, rate=Fraction(self._fps).limit_denominator(1001)
            )
            self._stream.width, self._stream.height = W + W % 2, H + H % 2
            self._stream.pix_fmt = "yuv420p"
        pixels = image.permute(1, 2, 0).contiguous().numpy()  # (3, H, W) -> (H, W, 3)
        even = np.zeros((self._stream.height, self._stream.width, 3), np.uint8)
        even[: min(H, even.shape[0]), : min(W, even.shape[1])] = pixels[: even.shape[0], : even.shape[1]]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(even, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
