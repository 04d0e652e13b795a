"""Godard et al.'s ablation in miniature: with vs without the left-right consistency term, with vs
without the flip-and-blend post-processing, several seeds, self-supervised (no labels in training):
``OMP_NUM_THREADS=1 python experiments/monodepth.py --out out/monodepth``.

Model: ``monodepth_narrow`` (narrow backbone, GroupNorm, the paper's decoder and losses;
``lr_consistency`` on / off). Adam, lr ``--lr`` (halved at 3/4 of the steps), no augmentation
but the stereo flip (a mirrored pair with its views swapped is again a rectified pair).
Post-processing is an evaluation-time switch (``model.post_process``), as in the paper: every
trained model is evaluated both ways.

1. Shapes world: train on ``shapes-stereo`` train (``--shapes-size``, ``--shapes-train`` scenes),
   evaluate on val (``--shapes-val`` scenes): depth through the calibration (focal, baseline)
   against the true depth, AbsRel / SqRel / RMSE / RMSE log / a1-a3 on pixels with ``gt > 0``
   (no cap, crop or median scaling), and disparity EPE / bad-2 / bad-3 on the valid pixels
   (:class:`~structpred.metrics.depth.DepthMetric`).
2. Real pairs (:class:`~structpred.data.stereo_real.StereoReal`): train on one pair's views
   **without its labels** (split ``train``), evaluate on the other (the cross setting) and also
   on the training pair itself (flagged: it trained on that evaluation pair). Motorcycle at
   scale 1/4 (125 x 185, calibrated: metric depth), Aloe at 1/8 (139 x 160, no calibration:
   depth from ``1 / disparity`` median-scaled to the true ``1 / disparity``).

Writes ``results.json`` and a figure ``monodepth_shapes.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from structpred.data.shapes_views import ShapesStereo
from structpred.data.stereo_real import StereoReal
from structpred.metrics.depth import DepthMetric, DepthPreset
from structpred.models.monodepth import MonoDepth, monodepth_narrow

LOG = logging.getLogger("monodepth")
KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "epe", "bad2", "bad3")
REAL_SCALE = {"motorcycle": 4.0, "aloe": 8.0}


def stereo_flip(views: Tensor) -> Tensor:
    """A rectified pair ``[B, 2, 3, H, W]`` mirrored: the mirrored right view becomes the left."""
    return views.flip(-1)[:, [1, 0]]


def train(
    views: Tensor, steps: int, batch: int, lr: float, lr_consistency: bool, seed: int, max_disparity: float
) -> tuple[MonoDepth, list[float]]:
    """Self-supervised training on the pairs ``views [N, 2, 3, H, W]`` (no labels)."""
    torch.manual_seed(seed)
    model = monodepth_narrow(lr_consistency=lr_consistency, max_disparity=max_disparity)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.75 * steps)], 0.5)
    g = torch.Generator().manual_seed(seed)
    model.train()
    history = []
    for step in range(steps):
        idx = torch.randint(0, views.shape[0], (batch,), generator=g)
        x = views[idx]  # (b, 2, 3, H, W)
        flip = torch.rand(batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None, None], stereo_flip(x), x)
        _, losses = model(x, [{}] * batch)  # no labels: the right view is the supervision
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if step % 100 == 0 or step == steps - 1:
            LOG.info("  step %d/%d loss %.4f", step, steps, history[-1])
    return model, history


@torch.no_grad()
def evaluate(
    model: MonoDepth, items: list[tuple[Tensor, dict[str, Tensor]]], post: bool, cap: float | None = None
) -> dict[str, Any]:
    """DepthMetric without a protocol; with ``cap`` also ``cap_*``: predicted depth clamped to
    [1e-3, cap] m and pixels with true depth >= cap dropped (KITTI's 80 m rule at this world's scale)."""
    model.eval()
    model.post_process = post
    metric = DepthMetric()
    capped = DepthMetric(DepthPreset(1e-3, cap)) if cap is not None else None
    for views, target in items:
        preds, _ = model(views[None, :1])  # the left view alone
        metric.update(preds, [target])
        if capped is not None:
            capped.update(preds, [target])
    model.post_process = False
    res = metric.compute()
    if capped is not None:
        res |= {f"cap_{k}": v for k, v in capped.compute().items() if k in KEYS[:7]}
    return res


def run_shapes(args: argparse.Namespace, out: dict[str, Any]) -> dict[tuple[int, bool], MonoDepth]:
    H, W = args.shapes_size
    train_ds = ShapesStereo("train", size=(H, W), num_images=args.shapes_train)
    val_ds = ShapesStereo("val", size=(H, W), num_images=args.shapes_val)
    views = torch.stack([train_ds[i][0] for i in range(len(train_ds))])  # (N, 2, 3, H, W)
    val = [val_ds[i] for i in range(len(val_ds))]
    cap = 1.01 * max(float(t["depth"].max()) for _, t in val)  # just past the farthest true depth
    out["shapes_cap_m"] = cap
    models = {}
    for seed in args.seeds:
        for lrc in (True, False):
            t0 = time.time()
            LOG.info("shapes seed %d lr_consistency %s", seed, lrc)
            model, hist = train(views, args.steps, args.batch, args.lr, lrc, seed, args.shapes_max_disp)
            secs = time.time() - t0
            for post in (False, True):
                res = evaluate(model, val, post, cap)
                row = {"seed": seed, "lr_consistency": lrc, "post_process": post, "train_s": secs, **res}
                row["loss_first_last"] = [hist[0], float(np.mean(hist[-20:]))]
                out["shapes"].append(row)
                LOG.info("  post %s: %s", post, {k: round(res.get(k, math.nan), 4) for k in KEYS})
            models[(seed, lrc)] = model
    return models


def run_real(args: argparse.Namespace, out: dict[str, Any]) -> None:
    pairs = {}
    for name, scale in REAL_SCALE.items():
        train_views, _ = StereoReal("train", pairs=(name,), scale=scale)[0]  # no labels
        pairs[name] = (train_views, StereoReal("val", pairs=(name,), scale=scale)[0])
    for train_name in REAL_SCALE:
        views = pairs[train_name][0][None]  # (1, 2, 3, H, W)
        for seed in args.seeds:
            for lrc in (True, False):
                t0 = time.time()
                LOG.info("real: train on %s seed %d lr_consistency %s", train_name, seed, lrc)
                model, hist = train(views, args.real_steps, 2, args.lr, lrc, seed, args.real_max_disp)
                secs = time.time() - t0
                for test_name in REAL_SCALE:
                    for post in (False, True):
                        res = evaluate(model, [pairs[test_name][1]], post)
                        row = {
                            "train": train_name,
                            "test": test_name,
                            "trained_on_test_pair": train_name == test_name,
                            "seed": seed,
                            "lr_consistency": lrc,
                            "post_process": post,
                            "train_s": secs,
                            "loss_first_last": [hist[0], float(np.mean(hist[-20:]))],
                            **res,
                        }
                        out["real"].append(row)
                        LOG.info(
                            "  %s post %s: %s",
                            test_name,
                            post,
                            {k: round(res.get(k, math.nan), 4) for k in KEYS},
                        )


def figure(models: dict[tuple[int, bool], MonoDepth], args: argparse.Namespace, path: Path) -> None:
    """Left image, true disparity, predictions with / without LR (post-processed), one val scene."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H, W = args.shapes_size
    views, target = ShapesStereo("val", size=(H, W), num_images=args.shapes_val)[0]
    seed = args.seeds[0]
    panels = [
        ("left image", views[0].permute(1, 2, 0).numpy()),
        ("true disparity", target["disparity"][0].numpy()),
    ]
    for lrc in (True, False):
        model = models[(seed, lrc)].eval()
        model.post_process = True
        with torch.no_grad():
            pred = model(views[None, :1])[0]["disparity"][0, 0].numpy()
        panels.append((f"{'with' if lrc else 'without'} LR (pp)", pred))
    vmax = float(target["disparity"].max())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.2))
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap=None if img.ndim == 3 else "magma", vmin=0, vmax=None if img.ndim == 3 else vmax)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(rows: list[dict[str, Any]], key: str) -> str:
    vals = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
    if not vals:
        return "-"
    mean, std = float(np.mean(vals)), float(np.std(vals))
    return f"{mean:.3f} ± {std:.3f}" if len(vals) > 1 else f"{mean:.3f}"


def summarize(out: dict[str, Any]) -> str:
    """Markdown tables (mean ± std over seeds) of a ``results.json``."""
    lines = []
    shape_keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "epe", "bad2")
    cap_keys = tuple(f"cap_{k}" for k in shape_keys[:7])
    for title, keys in (
        ("shapes, no cap", shape_keys),
        (f"shapes, cap {out.get('shapes_cap_m', 0):.2f} m", cap_keys),
    ):
        lines += [
            f"### {title}",
            "",
            "| LR | pp | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 2) + "|",
        ]
        for lrc in (True, False):
            for post in (False, True):
                rows = [r for r in out["shapes"] if r["lr_consistency"] == lrc and r["post_process"] == post]
                cells = " | ".join(_cell(rows, k) for k in keys)
                lines.append(f"| {'on' if lrc else 'off'} | {'yes' if post else 'no'} | {cells} |")
        lines.append("")
    real_keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "epe", "bad2", "bad3")
    lines += ["### real pairs", "", "| train | test | LR | pp | " + " | ".join(real_keys) + " |"]
    lines.append("|---" * (len(real_keys) + 4) + "|")
    for train_name in REAL_SCALE:
        for test_name in REAL_SCALE:
            for lrc in (True, False):
                for post in (False, True):
                    rows = [
                        r
                        for r in out["real"]
                        if (r["train"], r["test"], r["lr_consistency"], r["post_process"])
                        == (train_name, test_name, lrc, post)
                    ]
                    if not rows:
                        continue
                    own = " (trained on it)" if train_name == test_name else ""
                    cells = " | ".join(_cell(rows, k) for k in real_keys)
                    flags = f"{'on' if lrc else 'off'} | {'yes' if post else 'no'}"
                    lines.append(f"| {train_name} | {test_name}{own} | {flags} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/monodepth"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--shapes-size", type=int, nargs=2, default=[64, 128])
    p.add_argument("--shapes-train", type=int, default=64)
    p.add_argument("--shapes-val", type=int, default=16)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--real-steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--shapes-max-disp", type=float, default=0.1, help="sigmoid scale, fraction of W")
    p.add_argument("--real-max-disp", type=float, default=0.3, help="the paper's 0.3")
    p.add_argument("--skip-shapes", action="store_true")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--summarize", type=Path, help="print the tables of a results.json and exit")
    args = p.parse_args()
    if args.summarize is not None:
        print(summarize(json.loads(args.summarize.read_text())))
        return
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "shapes": [], "real": []}
    if not args.skip_shapes:
        models = run_shapes(args, out)
        figure(models, args, args.out / "monodepth_shapes.png")
    if not args.skip_real:
        run_real(args, out)
    out["total_s"] = time.time() - t0
    (args.out / "results.json").write_text(json.dumps(out, indent=1))
    (args.out / "results.md").write_text(summarize(out))
    LOG.info("done in %.1f min", out["total_s"] / 60)


if __name__ == "__main__":
    main()
