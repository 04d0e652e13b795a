"""SINT speed benchmark: frames per second of the tracker beside OpenCV template matching and MIL on
the same frames, and candidates per second through the RoI-pooled branch.

Shape shorthand: T frames, H x W frame size, K candidate boxes, D embedding size.

Model: ``sint_narrow`` (:mod:`structpred.models.sint`) with random weights (seed 0: the work does not
depend on them), eval mode, ``torch.no_grad()``, its default tracking settings (303 candidates a
frame, frames through the backbone 16 at a time). Frames: one ``track-real`` test sequence
(:class:`structpred.data.track_real.RealTrackingBench`, seed 0, T = 31) rendered at each size, the
tracker started from the true first box.

Rows ``tracking``, per frame size (128 x 128 and 240 x 320; ``--quick``: 64 x 64, T = 6):

- ``SINT``: :meth:`~structpred.models.sint.SINT.track` over the T frames;
- ``NCC``: :func:`ncc_track`, ``cv2.matchTemplate`` (``TM_CCOEFF_NORMED``, the first-frame grey
  template, searched within 2 box sides of the previous box);
- ``MIL``: :func:`mil_track`, ``cv2.TrackerMIL`` (OpenCV's headless build; KCF and CSRT are in the
  contrib build only, so they are absent).

The three run alternately in one loop (the order rotates each round) and each column is the median
over the rounds; frames/s counts the T - 1 tracked frames (frame 0 only starts a tracker). The
OpenCV trackers are peers: this benchmark and ``experiments/sint.py`` use them, the library never.

Rows ``RoI branch``, per frame size: given one frame's feature maps, K candidate boxes (the
tracker's 303, and 1,000) embedded by :meth:`~structpred.models.sint.SINT.embed` (RoI-align on
``c2`` and ``c3``, L2-normalised) and scored against a query: candidates/s = K / median time. The
backbone's time for that frame is its own row.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..models.sint import SINT, radial_candidates, sint_narrow
from .timing import suite_parser, suite_repeats

SEED = 0
LENGTH = 31  # frames per timed sequence (30 tracked)
SIZES = ((128, 128), (240, 320))
QUICK_SIZES = ((64, 64),)
QUICK_LENGTH = 6
CANDIDATES = (303, 1000)  # the tracker's count (3 scales x (1 + 10 x 10)), and more


def _uint8(frames: Tensor) -> list[np.ndarray]:
    """frames ``[T, 3, H, W]`` in [0, 1] -> T ``uint8[H, W, 3]`` RGB arrays."""
    return [(f.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8) for f in frames]


def ncc_track(frames: Tensor, box: Tensor) -> Tensor:
    """Template matching (OpenCV, a peer): the first-frame grey patch under ``box`` (``[4]`` xyxy px),
    the best ``TM_CCOEFF_NORMED`` within 2 box sides of the last position in each later frame.

    frames ``[T, 3, H, W]`` in [0, 1] -> boxes ``float[T, 4]`` xyxy px (fixed size)."""
    import cv2

    grey = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in _uint8(frames)]  # T x (H, W)
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    tmpl = grey[0][y1:y2, x1:x2]
    h, w = tmpl.shape
    H, W = grey[0].shape
    out, (px, py) = [box.tolist()], (x1, y1)
    for g in grey[1:]:
        r = 2 * max(w, h)
        sx0, sy0 = max(0, px - r), max(0, py - r)
        win = g[sy0 : min(H, py + h + r), sx0 : min(W, px + w + r)]
        if win.shape[0] < h or win.shape[1] < w:
            win, sx0, sy0 = g, 0, 0
        res = cv2.matchTemplate(win, tmpl, cv2.TM_CCOEFF_NORMED)
        _, _, _, (bx, by) = cv2.minMaxLoc(np.nan_to_num(res, nan=-1.0))
        px, py = sx0 + bx, sy0 + by
        out.append([px, py, px + w, py + h])
    return torch.tensor(out, dtype=torch.float32)


MIL_MIN_SIDE = 8  # px: OpenCV's MIL never returns from init() on a box with a side < 5


def mil_track(frames: Tensor, box: Tensor) -> Tensor:
    """OpenCV's MIL tracker (Babenko et al. 2009, a peer), initialised on frame 0's ``box`` (``[4]``
    xyxy px); it updates its classifier online. Where it reports a loss, the last box is kept.

    OpenCV's MIL hangs in ``init`` on boxes under 5 px a side (its Haar features find no room), so
    a smaller side is tracked as a :data:`MIL_MIN_SIDE` px box about the same centre and the
    output is given back at the original size about the tracked centre.

    frames ``[T, 3, H, W]`` in [0, 1] -> boxes ``float[T, 4]`` xyxy px."""
    import cv2

    imgs = [np.ascontiguousarray(i[..., ::-1]) for i in _uint8(frames)]  # T x (H, W, 3) BGR
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    tw, th = max(w, MIL_MIN_SIDE), max(h, MIL_MIN_SIDE)  # the box MIL tracks
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rect = (int(round(cx - tw / 2)), int(round(cy - th / 2)), int(round(tw)), int(round(th)))
    tracker = cv2.TrackerMIL_create()  # type: ignore[attr-defined]
    tracker.init(imgs[0], rect)
    out = [[x1, y1, x2, y2]]
    for img in imgs[1:]:
        ok, (x, y, rw, rh) = tracker.update(img)
        if ok:
            cx, cy = x + rw / 2, y + rh / 2
            out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        else:
            out.append(out[-1])
    return torch.tensor(out, dtype=torch.float32)


def sequence(height: int, width: int, length: int) -> tuple[Tensor, Tensor]:
    """One ``track-real`` test sequence: (frames ``[T, 3, H, W]`` in [0, 1], first box ``[4]`` xyxy)."""
    from ..data.track_real import RealTrackingBench

    frames, target = RealTrackingBench(
        "test", num_sequences=1, length=length, size=(height, width), seed=SEED
    )[0]
    return frames, target["boxes"][0]


def _model() -> SINT:
    torch.manual_seed(SEED)
    return sint_narrow().eval()


def rotating_medians(calls: list[Callable[[], object]], repeats: int, warmup: int) -> list[float]:
    """Median ms of each call, run alternately ``repeats`` rounds (the order rotates every round)."""
    for _ in range(warmup):
        for fn in calls:
            fn()
    times: list[list[float]] = [[] for _ in calls]
    for r in range(repeats):
        for k in range(len(calls)):
            i = (k + r) % len(calls)
            start = time.perf_counter()
            calls[i]()
            times[i].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


@dataclass
class TrackRow:
    """Median ms of tracking one sequence with SINT, NCC and MIL; ``frames`` tracked frames (T - 1)."""

    name: str
    frames: int
    sint_ms: float
    ncc_ms: float
    mil_ms: float

    def fps(self, ms: float) -> float:
        return self.frames / ms * 1e3


@dataclass
class RoiRow:
    """Median ms of one RoI-branch case (``count`` candidates, or 0 for the backbone row)."""

    name: str
    count: int
    ms: float


def tracking_rows(
    sizes: tuple[tuple[int, int], ...], length: int, repeats: int, warmup: int
) -> list[TrackRow]:
    """SINT, NCC and MIL over one sequence at each size (module doc)."""
    model = _model()
    rows = []
    for H, W in sizes:
        frames, box = sequence(H, W, length)

        def sint_call(frames: Tensor = frames, box: Tensor = box) -> Tensor:
            with torch.no_grad():
                return model.track(frames, box)

        def ncc_call(frames: Tensor = frames, box: Tensor = box) -> Tensor:
            return ncc_track(frames, box)

        def mil_call(frames: Tensor = frames, box: Tensor = box) -> Tensor:
            return mil_track(frames, box)

        for name, fn in (("SINT", sint_call), ("NCC", ncc_call), ("MIL", mil_call)):
            got = fn()
            if (
                not isinstance(got, Tensor)
                or tuple(got.shape) != (length, 4)
                or not bool(got.isfinite().all())
            ):
                raise RuntimeError(f"{name} did not return [{length}, 4] finite boxes at {H}x{W}")
        sint_ms, ncc_ms, mil_ms = rotating_medians([sint_call, ncc_call, mil_call], repeats, warmup)
        rows.append(TrackRow(f"{H}x{W}, T = {length}", length - 1, sint_ms, ncc_ms, mil_ms))
    return rows


def roi_rows(sizes: tuple[tuple[int, int], ...], repeats: int, warmup: int) -> list[RoiRow]:
    """The backbone on one frame, then K candidates through :meth:`SINT.embed` + scoring (module doc)."""
    model = _model()
    c = model.config
    rows = []
    for H, W in sizes:
        frames, box = sequence(H, W, 2)
        with torch.no_grad():
            query = model.start(frames[0], box)  # (1, D)
            feats = model.features(frames[1:])  # {layer: (1, Cl, H/sl, W/sl)}

        def backbone(frame: Tensor = frames[1:]) -> object:
            with torch.no_grad():
                return model.features(frame)

        ms = rotating_medians([backbone], repeats, warmup)[0]
        rows.append(RoiRow(f"backbone (c2, c3), one {H}x{W} frame", 0, ms))
        for K in CANDIDATES:
            # the tracker's 303 radial boxes; for more, the same pattern with more radii and angles
            side = max(1, round((K / len(c.scales) - 1) ** 0.5))
            cands = radial_candidates(box, (H, W), side, side, c.search_radius, c.scales)
            cands = cands[torch.arange(K) % len(cands)]  # (K, 4)
            rois = torch.cat([cands.new_zeros(K, 1), cands], 1)  # (K, 5): frame 0 of feats

            def embed(rois: Tensor = rois, feats: dict[str, Tensor] = feats, query: Tensor = query) -> Tensor:
                with torch.no_grad():
                    return (model.embed(feats, rois) @ query[0]).argmax()  # (K, D) @ (D,) -> (K,)

            ms = rotating_medians([embed], repeats, warmup)[0]
            rows.append(RoiRow(f"RoI-align + embed + score, {K} candidates, {H}x{W}", K, ms))
    return rows


def format_tracking(rows: list[TrackRow]) -> str:
    """Markdown: ms per sequence and frames/s of each tracker."""
    lines = [
        "| frames | SINT ms | SINT frames/s | NCC ms | NCC frames/s | MIL ms | MIL frames/s "
        "| SINT / NCC | SINT / MIL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.sint_ms:.1f} | {r.fps(r.sint_ms):.1f} | {r.ncc_ms:.1f} | "
            f"{r.fps(r.ncc_ms):.1f} | {r.mil_ms:.1f} | {r.fps(r.mil_ms):.1f} | "
            f"{r.sint_ms / r.ncc_ms:.2f} | {r.sint_ms / r.mil_ms:.2f} |"
        )
    return "\n".join(lines)


def format_roi(rows: list[RoiRow]) -> str:
    """Markdown: ms and candidates/s of the RoI-pooled branch."""
    lines = ["| case | ms | candidates/s |", "|---|---:|---:|"]
    for r in rows:
        per_s = f"{r.count / r.ms * 1e3:.0f}" if r.count else "-"
        lines.append(f"| {r.name} | {r.ms:.2f} | {per_s} |")
    return "\n".join(lines)


def run(repeats: int = 5, threads: int = 2, quick: bool = False) -> tuple[list[TrackRow], list[RoiRow]]:
    """(tracking rows, RoI-branch rows) with torch and OpenCV on ``threads`` threads."""
    import cv2

    torch.set_num_threads(threads)
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        sizes = QUICK_SIZES if quick else SIZES
        warmup = 0 if quick else 1
        length = QUICK_LENGTH if quick else LENGTH
        return tracking_rows(sizes, length, repeats, warmup), roi_rows(sizes, repeats, warmup)
    finally:
        cv2.setNumThreads(cv2_threads)


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the two Markdown tables."""
    parser = suite_parser("sint", __doc__, 5)
    args = parser.parse_args(argv)
    repeats = suite_repeats(parser, args)
    previous_threads = torch.get_num_threads()
    try:
        tracks, rois = run(repeats, args.threads, args.quick)
    finally:  # the caller (a test, a notebook) gets its own thread count back
        torch.set_num_threads(previous_threads)
    import cv2

    header = (
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads, median of {repeats} "
        "alternating runs"
    )
    if args.quick:
        H, W = QUICK_SIZES[0]
        header += f" (QUICK: {H}x{W}, T = {QUICK_LENGTH}, 1 repeat: a smoke run, not figures)"
    text = "\n\n".join([header, format_tracking(tracks), format_roi(rois)])
    print(text)
    return text


if __name__ == "__main__":
    main()
