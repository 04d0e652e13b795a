"""The stereo network (``stereo_net_narrow``) trained on this CPU vs OpenCV's StereoSGBM on real
ground truth: ``python experiments/stereo.py --out out/stereo`` (one torch thread).

Training (supervised, ``smooth-L1`` on valid pixels, Adam, batch ``--batch``, gradient norm
clipped at 10; the learning rate warms up over 3 % of a stage and then follows a cosine over the
stage's *wall-clock* budget, so the run fits its minutes whatever the machine's load):

1. ``shapes-stereo`` (the shapes world, 128 x 256, whole-pixel disparities 1-12 px) for
   ``--shapes-minutes``;
2. ``stereo-warped`` (:class:`~structpred.data.stereo_warped.WarpedPhotoStereo`: real photos as
   textured planes, exact disparity; background 0-30 px, patches up to 30 px more; never
   Motorcycle or Aloe) for ``--photo-minutes``: scenes rendered at 144 x 288, a pool of
   ``--pool`` (300) of them, one replaced by a new scene every step, random 128 x 256 crops.

Evaluation (:func:`structpred.metrics.depth.disparity_metrics`: EPE px, bad-2 / bad-3 % over
valid pixels) on ``stereo-real`` (:class:`~structpred.data.stereo_real.StereoReal`): **Aloe ÷4**
(278 x 320, disparity 11-53 px) and **Motorcycle ÷2** (250 x 370, 4-30 px), also Aloe ÷8 and
Motorcycle ÷4, plus 20 held-out scenes of each training world (``val`` splits). The network sees
each pair whole.

Peer: ``cv2.StereoSGBM_create`` on the colour views (BGR uint8) with the OpenCV sample
``stereo_match.py``'s settings (``P1 = 8 * 3 * b^2``, ``P2 = 32 * 3 * b^2``, ``disp12MaxDiff = 1``,
``uniquenessRatio = 10``, ``speckleWindowSize = 100``, ``speckleRange = 32``), ``minDisparity = 0`` and
``numDisparities = 64`` (a multiple of 16 covering every pair), for block sizes 3, 5, 7, 9; the
best block size per pair is chosen **on that pair** (an advantage given to the peer). SGBM leaves
holes (no confident match); scored two ways: ``filled`` (holes filled along the row from the
nearest valid pixel on the left, else the right — Middlebury's background fill) over every valid
pixel, and ``own`` over SGBM's non-hole pixels only (its density beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

import structpred.models.stereo_net  # noqa: F401  (registers stereo_net_narrow)
from structpred.data.shapes_views import ShapesStereo
from structpred.data.stereo_real import StereoReal
from structpred.data.stereo_warped import WarpedPhotoStereo
from structpred.engine.trainer import seed_everything
from structpred.metrics.depth import disparity_metrics
from structpred.models import get_model

log = logging.getLogger("stereo")
SIZE = (128, 256)
RENDER = (144, 288)  # stereo-warped scenes are rendered larger and cropped to SIZE at random
PHOTO_DISPARITY = (30.0, 30.0)
BLOCK_SIZES = (3, 5, 7, 9)
NUM_DISPARITIES = 64


# ------------------------------------------------------------------------------------ data
def real_pairs() -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """The two real pairs with ground truth, at the stated scales."""
    return {
        "Aloe ÷4": StereoReal("val", pairs=("aloe",), scale=4)[0],
        "Aloe ÷8": StereoReal("val", pairs=("aloe",), scale=8)[0],
        "Motorcycle ÷2": StereoReal("val", pairs=("motorcycle",), scale=2)[0],
        "Motorcycle ÷4": StereoReal("val", pairs=("motorcycle",), scale=4)[0],
    }


def held_out(n: int = 20) -> dict[str, list[tuple[torch.Tensor, dict[str, torch.Tensor]]]]:
    shapes = ShapesStereo("val", size=SIZE, num_images=n, seed=0)
    photos = WarpedPhotoStereo("val", size=SIZE, num_images=n, disparity=PHOTO_DISPARITY, right_view=False)
    return {"shapes val": [shapes[i] for i in range(n)], "photos val": [photos[i] for i in range(n)]}


# ------------------------------------------------------------------------------------ peer
def _bgr(view: torch.Tensor) -> np.ndarray:
    """float [3, H, W] RGB in [0, 1] -> uint8 [H, W, 3] BGR (the sample reads colour images: cn = 3)."""
    rgb = (view.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def sgbm(views: torch.Tensor, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(disparity px [H, W] with holes filled, SGBM's own mask of matched pixels)."""
    matcher = cv2.StereoSGBM_create(  # type: ignore[attr-defined]
        minDisparity=0,
        numDisparities=NUM_DISPARITIES,
        blockSize=block,
        P1=8 * 3 * block**2,
        P2=32 * 3 * block**2,
        disp12MaxDiff=1,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=32,
    )
    raw = matcher.compute(_bgr(views[0]), _bgr(views[1])).astype(np.float32) / 16.0  # 4 fraction bits
    ok = raw >= 0  # holes are minDisparity - 1
    return fill_holes(raw, ok), ok


def fill_holes(disparity: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Each hole takes the nearest matched value on its row to the left, else to the right, else 0."""
    out = disparity.copy()
    H, W = out.shape
    for y in range(H):
        row, good = out[y], ok[y]
        if not good.any():
            row[:] = 0.0
            continue
        idx = np.where(good, np.arange(W), -1)
        left = np.maximum.accumulate(idx)  # last matched index at or before x
        left[left < 0] = int(np.argmax(good))  # before the first match: the first match
        row[:] = row[left]
    return out


# ------------------------------------------------------------------------------------ scoring
Item = tuple[torch.Tensor, dict[str, torch.Tensor]]


def score(pred: np.ndarray, target: dict[str, torch.Tensor]) -> dict[str, float]:
    gt = target["disparity"].numpy()  # (1, H, W)
    return disparity_metrics(np.asarray(pred, np.float64).reshape(gt.shape), gt, target["valid"].numpy())


def predict(model: torch.nn.Module, views: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        preds, _ = model(views[None])
    return preds["disparity"][0, 0].numpy()


def _as_list(items: Item | list[Item]) -> list[Item]:
    return items if isinstance(items, list) else [items]


def evaluate(model: torch.nn.Module, sets: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for name, items in sets.items():
        items = _as_list(items)
        preds = np.stack([predict(model, v) for v, _ in items])[:, None]  # (B, 1, H, W)
        gts = np.stack([t["disparity"].numpy() for _, t in items])  # (B, 1, H, W)
        valid = np.stack([t["valid"].numpy() for _, t in items])  # (B, H, W)
        out[name] = disparity_metrics(preds, gts, valid)
    return out


def evaluate_sgbm(sets: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, items in sets.items():
        items = _as_list(items)
        gts = np.stack([t["disparity"].numpy() for _, t in items])  # (B, 1, H, W)
        valid = np.stack([t["valid"].numpy() for _, t in items])  # (B, H, W)
        out[name] = {}
        for block in BLOCK_SIZES:
            filled, own, seconds = [], [], []
            for views, _ in items:
                start = time.perf_counter()
                disp, ok = sgbm(views, block)
                seconds.append(time.perf_counter() - start)
                filled.append(disp)
                own.append(ok)
            pred = np.stack(filled)[:, None]
            res = disparity_metrics(pred, gts, valid)
            own_res = disparity_metrics(pred, gts, valid & np.stack(own))
            res.update({f"own_{k}": v for k, v in own_res.items()})
            res["density"] = 100 * float(np.mean([ok.mean() for ok in own]))
            res["ms"] = 1e3 * float(np.median(seconds))
            out[name][f"block {block}"] = res
    return out


# ------------------------------------------------------------------------------------ training
def crop(item: Item, g: torch.Generator) -> Item:
    """A random SIZE crop of a rendered pair: the same window in both views keeps every disparity."""
    views, target = item
    H, W = views.shape[-2:]
    y = int(torch.randint(H - SIZE[0] + 1, (), generator=g))
    x = int(torch.randint(W - SIZE[1] + 1, (), generator=g))
    rows, cols = slice(y, y + SIZE[0]), slice(x, x + SIZE[1])
    return views[..., rows, cols], {k: target[k][..., rows, cols] for k in ("disparity", "valid")}


def _stack(items: list[Item]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    x = torch.stack([v for v, _ in items])  # (B, 2, 3, H, W)
    return x, [{"disparity": t["disparity"], "valid": t["valid"]} for _, t in items]


def train_stage(
    model: torch.nn.Module,
    draw: Callable[[int], list[Item]],
    minutes: float,
    lr: float,
    name: str,
    history: list[dict[str, Any]],
) -> int:
    """Adam for ``minutes`` of wall clock on batches from ``draw(step)``; returns the steps done."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    budget = 60.0 * minutes
    start = time.perf_counter()
    step, recent = 0, []
    model.train()
    while True:
        progress = (time.perf_counter() - start) / budget
        if progress >= 1.0:
            break
        scale = max(min(1.0, progress / 0.03) * 0.5 * (1 + math.cos(math.pi * progress)), 0.02)
        for group in opt.param_groups:
            group["lr"] = lr * scale
        x, targets = _stack(draw(step))
        _, losses = model(x, targets, predict=False)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        recent.append(float(losses["loss_disparity"].detach()))
        step += 1
        if step % 25 == 0:
            elapsed = time.perf_counter() - start
            mean = float(np.mean(recent))
            history.append({"stage": name, "step": step, "seconds": elapsed, "loss": mean})
            log.info(
                "%s step %d  %.0f s  loss_disparity %.3f  lr %.2e", name, step, elapsed, mean, lr * scale
            )
            recent = []
    return step


# ------------------------------------------------------------------------------------ report
def best_block(rows: dict[str, dict[str, float]]) -> str:
    return min(rows.items(), key=lambda kv: kv[1]["epe"])[0]


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for stage in ("after shapes", "after photos"):
        volume = results["args"].get("volume", "concat")
        lines += [f"**stereo_net_narrow ({volume} volume), {stage}** ({results['steps'][stage]} steps)", ""]
        lines += ["| set | EPE (px) | bad-2 (%) | bad-3 (%) |", "|---|---:|---:|---:|"]
        for name, m in results["ours"][stage].items():
            lines.append(f"| {name} | {m['epe']:.2f} | {m['bad2']:.1f} | {m['bad3']:.1f} |")
        lines.append("")
    lines += ["**Real pairs: ours (final) vs StereoSGBM (its best block size on each pair)**", ""]
    lines += [
        "| pair | ours EPE | ours bad-2 | ours bad-3 | SGBM block | SGBM EPE (filled) | SGBM bad-2 | "
        "SGBM bad-3 | SGBM density % | SGBM own-pixel EPE / bad-2 | lower EPE | lower bad-2 |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---|",
    ]
    for name in results["real"]:
        ours = results["ours"]["after photos"][name]
        block = best_block(results["sgbm"][name])
        peer = results["sgbm"][name][block]
        lines.append(
            f"| {name} | {ours['epe']:.2f} | {ours['bad2']:.1f} | {ours['bad3']:.1f} | {block} | "
            f"{peer['epe']:.2f} | {peer['bad2']:.1f} | {peer['bad3']:.1f} | {peer['density']:.0f} | "
            f"{peer['own_epe']:.2f} / {peer['own_bad2']:.1f} | "
            f"{'ours' if ours['epe'] < peer['epe'] else 'SGBM'} | "
            f"{'ours' if ours['bad2'] < peer['bad2'] else 'SGBM'} |"
        )
    lines += ["", "**StereoSGBM, every block size** (EPE / bad-2 / bad-3 filled; density; ms per pair)", ""]
    lines += [
        "| set | " + " | ".join(f"block {b}" for b in BLOCK_SIZES) + " |",
        "|---|" + "---|" * len(BLOCK_SIZES),
    ]
    for name, rows in results["sgbm"].items():
        cells = [
            f"{r['epe']:.2f} / {r['bad2']:.1f} / {r['bad3']:.1f}; {r['density']:.0f} %; {r['ms']:.0f} ms"
            for r in rows.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(model: torch.nn.Module, pairs: dict[str, Item], blocks: dict[str, str], path: Path) -> None:
    """One row per real pair: left view, ground truth, SGBM (filled), ours; one colour scale per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pairs), 4, figsize=(14, 3.4 * len(pairs)), squeeze=False)
    for row, (name, (views, target)) in zip(axes, pairs.items(), strict=True):
        gt = target["disparity"][0].numpy()
        valid = target["valid"].numpy()
        peer, _ = sgbm(views, int(blocks[name].split()[-1]))
        ours = predict(model, views)
        lo, hi = float(gt[valid].min()), float(gt[valid].max())
        panels = [
            (views[0].permute(1, 2, 0).clamp(0, 1).numpy(), f"{name}: left"),
            (np.where(valid, gt, np.nan), "ground truth disparity"),
            (peer, f"StereoSGBM ({blocks[name]}), EPE {score(peer, target)['epe']:.2f}"),
            (ours, f"stereo_net_narrow, EPE {score(ours, target)['epe']:.2f}"),
        ]
        for ax, (img, title) in zip(row, panels, strict=True):
            ax.imshow(img, cmap=None if img.ndim == 3 else "magma", vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out/stereo"))
    parser.add_argument("--shapes-minutes", type=float, default=5.0)
    parser.add_argument("--photo-minutes", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--pool", type=int, default=300, help="stereo-warped scenes kept; one replaced a step"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--volume", choices=("concat", "correlation"), default="concat", help="the cost volume"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=Path("experiments/figures/stereo_real_pairs.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    seed_everything(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    real = real_pairs()
    sets: dict[str, Any] = {**real, **held_out()}
    log.info("StereoSGBM on %s", list(sets))
    peer = evaluate_sgbm(sets)

    model = get_model("stereo_net_narrow", volume=args.volume)
    history: list[dict[str, Any]] = []
    results: dict[str, Any] = {"real": list(real), "sgbm": peer, "ours": {}, "steps": {}, "history": history}
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    g = torch.Generator().manual_seed(args.seed)

    shapes = ShapesStereo("train", size=SIZE, num_images=5000, seed=args.seed)

    def draw_shapes(step: int) -> list[Item]:
        return [shapes[int(i)] for i in torch.randint(len(shapes), (args.batch,), generator=g)]

    results["steps"]["after shapes"] = train_stage(
        model, draw_shapes, args.shapes_minutes, args.lr, "shapes", history
    )
    results["ours"]["after shapes"] = evaluate(model, sets)
    log.info("after shapes: %s", results["ours"]["after shapes"])

    photos = WarpedPhotoStereo(
        "train", size=RENDER, num_images=10**6, seed=args.seed, disparity=PHOTO_DISPARITY, right_view=False
    )
    start = time.perf_counter()
    pool = [photos[i] for i in range(args.pool)]
    log.info("rendered a pool of %d scenes in %.0f s", args.pool, time.perf_counter() - start)
    fresh = iter(range(args.pool, 10**6))

    def draw_photos(step: int) -> list[Item]:
        pool[int(torch.randint(args.pool, (), generator=g))] = photos[next(fresh)]  # one new scene a step
        return [crop(pool[int(i)], g) for i in torch.randint(args.pool, (args.batch,), generator=g)]

    results["steps"]["after photos"] = train_stage(
        model, draw_photos, args.photo_minutes, args.lr, "photos", history
    )
    results["ours"]["after photos"] = evaluate(model, sets)
    log.info("after photos: %s", results["ours"]["after photos"])
    results["wall_minutes"] = (time.perf_counter() - started) / 60

    save_file(model.state_dict(), str(args.out / "stereo_net_narrow.safetensors"))
    for name, (views, _) in real.items():
        np.save(args.out / f"pred_{name.replace(' ', '_').replace('÷', 'div')}.npy", predict(model, views))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / "results.md").write_text(text)
    blocks = {name: best_block(peer[name]) for name in real}
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure(model, real, blocks, args.figure)
    print(text)
    print(f"\nwall clock {results['wall_minutes']:.1f} min (1 torch thread, shared machine)")


if __name__ == "__main__":
    main()
