"""SINT trained on the shapes world's clips vs normalised cross-correlation template matching.

    .venv/bin/python experiments/sint.py --minutes 14 --train-clips 600 --val-clips 60 --save out/sint_run

Trains ``sint_narrow`` (one thread, a wall-clock budget) on ``shapes-video`` train clips
(128 x 128, T = 8, every track seen in frame 0 gives pairs), then tracks the first object seen in
frame 0 of each ``shapes-video`` val clip (T = 16) and scores OPE (success AUC, precision@20) for:
the trained SINT, the same network untrained (random weights), and cv2.matchTemplate
(TM_CCOEFF_NORMED, the first-frame template, searched within 2 box sides of the previous box;
a peer, experiments only).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from structpred.data.shapes_views import ShapesVideo
from structpred.heads.sint_loss import target_track
from structpred.models import sint  # noqa: F401  (registers sint_narrow until models/__init__ imports it)
from structpred.models.registry import get_model
from structpred.tasks.tracking import OPEMetric


def ncc_track(frames: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Template matching: the first-frame patch, best TM_CCOEFF_NORMED in a window around the last box."""
    imgs = [(f.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for f in frames]  # (H, W, 3)
    grey = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in imgs]
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


def score(tracker, data) -> dict:
    metric = OPEMetric()
    for frames, target in data:
        gt, _ = target_track(target, frames.shape[0], "val")
        metric.update({"boxes": tracker(frames, gt[0])[None]}, [target])
    r = metric.compute()
    return {
        "success_auc": round(r["success_auc"], 4),
        "precision_20": round(r["precision_20"], 4),
        "clips": r["num_clips"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--train-clips", type=int, default=300)
    p.add_argument("--val-clips", type=int, default=30)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--save", default=None, help="write the trained model as a checkpoint run folder here")
    p.add_argument("--eval-checkpoint", default=None, help="no training: evaluate this run folder's model")
    p.add_argument(
        "--real", type=int, default=0, help="also score N track-real test sequences (T=60, 120x160)"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    val = [ShapesVideo("val", num_images=args.val_clips, length=16)[i] for i in range(args.val_clips)]
    model = get_model("sint_narrow")
    untrained = get_model("sint_narrow").eval()
    untrained.load_state_dict(model.state_dict())
    if args.eval_checkpoint:
        from structpred.engine.run import load_model

        model = load_model(args.eval_checkpoint)[0]
        evaluate(model, untrained, val, args.real)
        return
    train = ShapesVideo("train", num_images=args.train_clips, length=8, cache=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, step = time.time(), 0
    order = torch.randperm(len(train))
    while time.time() - start < args.minutes * 60:
        idx = [int(order[(step * args.batch + k) % len(train)]) for k in range(args.batch)]
        items = [train[i] for i in idx]
        model.train()
        _, losses = model([x for x, _ in items], [t for _, t in items], predict=False)
        opt.zero_grad()
        losses["loss_contrastive"].backward()
        opt.step()
        if step % 50 == 0:
            loss = float(losses["loss_contrastive"].detach())
            print(f"step {step} {time.time() - start:.0f}s loss {loss:.4f}", flush=True)
        step += 1
    print(f"trained {step} steps x {args.batch} clips in {time.time() - start:.0f}s")
    if args.save:
        from structpred.engine.checkpoint import save_checkpoint

        save_checkpoint(args.save, step, model, None, {"config": {"model_name": "sint_narrow"}})
    evaluate(model.eval(), untrained, val, args.real)


def evaluate(model, untrained, val, real: int) -> None:
    """OPE of the trained and untrained SINT and of NCC template matching on each evaluation set."""
    sets = [("shapes-video val", val)]
    if real:
        from structpred.data.track_real import RealTrackingBench

        bench = RealTrackingBench("test", num_sequences=real, length=60, size=(120, 160), seed=0)
        sets.append(("track-real test", [bench[i] for i in range(real)]))
    trackers = (
        ("sint_trained", model.track),
        ("sint_untrained", untrained.track),
        ("ncc_template", ncc_track),
    )
    with torch.no_grad():
        for data_name, data in sets:
            for name, tracker in trackers:
                t0 = time.time()
                print(data_name, name, score(tracker, data), f"{time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
