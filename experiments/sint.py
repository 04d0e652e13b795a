"""SINT trained on the shapes world's clips; the lecture's ablation (no updates vs online updates
with its own predictions); SINT+'s box refinement; OpenCV baselines (NCC template matching, MIL,
and KCF / CSRT from a separate contrib build).

    .venv/bin/python experiments/sint.py --minutes 9 --train-clips 600 --val-clips 60 --real 10 \
        --save out/sint_run
    .venv/bin/python experiments/sint.py --eval-checkpoint out/sint_run --val-clips 60 --real 10
    # the seed study: a fixed step budget per seed, results as JSON, then mean and range
    .venv/bin/python experiments/sint.py --seed 1 --steps 600 --minutes 30 --train-clips 600 \
        --val-clips 60 --real 30 --save out/sint_seed1 --json out/sint_seed1.json
    .venv/bin/python experiments/sint.py --summarize out/sint_seed0.json out/sint_seed1.json ...

Trains ``sint_narrow`` (one thread, a wall-clock budget) on ``shapes-video`` train clips
(128 x 128, T = 8, every track seen in frame 0 gives pairs), then tracks the first object seen in
frame 0 of each ``shapes-video`` val clip (T = 16) and of ``--real`` ``track-real`` test sequences
(T = 60, 120 x 160) and scores OPE (success AUC, precision@20) for:

- the trained SINT as the paper runs it: the first-frame query only, no updates;
- the same checkpoint updated online with its own predictions (the ablation): the query moved to
  the predicted box's embedding by a moving average (rate 0.1, 0.5, 1.0 = replaced), or the
  weights fine-tuned by one Adam step a frame (lr 1e-4, 1e-3) of the contrastive loss on pairs
  sampled around the predicted box (:func:`ema_tracker`, :func:`finetune_tracker`, built on the
  model's public ``features`` / ``embed`` / ``start`` / ``step``);
- SINT+'s box refinement (ridge regressors fitted on the first frame only, never updated) at
  three ridge weights (:func:`refine_tracker`);
- the same network untrained (random weights);
- OpenCV peers (experiments and benchmarks only): ``cv2.matchTemplate`` (TM_CCOEFF_NORMED, the
  first-frame template, searched within 2 box sides of the previous box) and ``cv2.TrackerMIL``
  (online boosting). KCF / CSRT are in OpenCV's contrib build only, absent from the project's
  headless one: ``--contrib-python PY`` runs them in another interpreter that has that build (a
  throw-away venv with ``opencv-contrib-python-headless``, e.g. ``/tmp/cvcontrib_venv/bin/python``),
  on the same frames written to a temporary ``.npz`` (:func:`contrib_tracker`).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from structpred.bench.sint import mil_track, ncc_track
from structpred.data.shapes_views import ShapesVideo
from structpred.heads.sint_loss import marginal_contrastive_loss, sample_candidates, target_track
from structpred.models.registry import get_model
from structpred.models.sint import SINT
from structpred.ops.boxes import box_iou
from structpred.tasks.tracking import OPEMetric


def _roi(index: int, box: Tensor) -> Tensor:
    """One RoI row ``[1, 5]`` (frame index into the feature maps, x1, y1, x2, y2)."""
    return torch.cat([box.new_tensor([float(index)]), box])[None]


def ema_tracker(model: SINT, rate: float) -> Callable[[Tensor, Tensor], Tensor]:
    """SINT updated online with its own predictions: after each frame the query becomes
    ``normalize((1 - rate) * query + rate * embedding of the predicted box)`` (rate 1: replaced).
    Same weights, same candidates and matching as :meth:`SINT.track`; only the query moves."""

    def track(frames: Tensor, init: Tensor) -> Tensor:
        T, _, H, W = frames.shape
        chunk = model.config.chunk
        with torch.no_grad():
            query = model.start(frames[0], init)  # (1, D)
            out = [init]
            for begin in range(1, T, chunk):
                feats = model.features(frames[begin : begin + chunk])
                for i in range(feats[model.config.layers[0]].shape[0]):
                    box = model.step(feats, i, out[-1], query, (H, W))
                    seen = model.embed(feats, _roi(i, box))  # (1, D)
                    query = nn.functional.normalize((1 - rate) * query + rate * seen, dim=1)
                    out.append(box)
        return torch.stack(out)  # (T, 4)

    return track


def finetune_tracker(model: SINT, lr: float, candidates: int = 16) -> Callable[[Tensor, Tensor], Tensor]:
    """SINT fine-tuned online on its own predictions: a copy of the trained network per sequence;
    after each frame's prediction, one Adam step of the marginal contrastive loss on pairs (the
    first-frame target, boxes jittered around the *predicted* box labelled by IoU with it, as in
    training); the query is then re-embedded with the new weights."""
    c = model.config

    def track(frames: Tensor, init: Tensor) -> Tensor:
        T, _, H, W = frames.shape
        net = copy.deepcopy(model).eval()  # GroupNorm: no batch statistics, eval == train here
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            query = net.start(frames[0], init)
        out = [init]
        for t in range(1, T):
            with torch.no_grad():
                box = net.step(net.features(frames[t : t + 1]), 0, out[-1], query, (H, W))
            out.append(box)
            cands, pos = sample_candidates(box, candidates, (H, W), g, pos_iou=c.pos_iou, neg_iou=c.neg_iou)
            feats = net.features(torch.stack([frames[0], frames[t]]))  # {layer: (2, Cl, h, w)}
            rois = torch.cat(
                [_roi(0, init), torch.cat([cands.new_ones(len(cands), 1), cands], 1)]
            )  # (1+K, 5)
            emb = net.embed(feats, rois)  # (1 + K, D)
            loss = marginal_contrastive_loss(emb[:1].expand(len(cands), -1), emb[1:], pos, c.margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                query = net.start(frames[0], init)
        return torch.stack(out)  # (T, 4)

    return track


def refine_tracker(model: SINT, lam: float) -> Callable[[Tensor, Tensor], Tensor]:
    """SINT with SINT+'s box refinement at ridge weight ``lam``: :meth:`SINT.track` with
    ``config.refine`` (regressors fitted on the first frame only), the rest unchanged."""

    def track(frames: Tensor, init: Tensor) -> Tensor:
        T, _, H, W = frames.shape
        c = model.config
        saved = c.refine_lambda
        try:
            c.refine_lambda = lam
            refiner = model.fit_refiner(frames[0], init)
        finally:
            c.refine_lambda = saved
        with torch.no_grad():
            query = model.start(frames[0], init)
            out = [init]
            for begin in range(1, T, c.chunk):
                feats = model.features(frames[begin : begin + c.chunk])
                for i in range(feats[c.layers[0]].shape[0]):
                    out.append(model.step(feats, i, out[-1], query, (H, W), refiner))
        return torch.stack(out)  # (T, 4)

    return track


# Runs in the contrib interpreter: numpy and cv2 only. Tiny boxes are tracked enlarged to 8 px
# about their centre (as mil_track does for MIL) and given back scaled to the original size.
_CONTRIB_RUNNER = """
import sys, numpy as np, cv2
data = np.load(sys.argv[1]); make = {"kcf": cv2.TrackerKCF_create, "csrt": cv2.TrackerCSRT_create}
result = {}
for k in range(int(data["count"])):
    frames, (x1, y1, x2, y2) = data[f"frames{k}"], data[f"box{k}"].tolist()
    w, h = x2 - x1, y2 - y1; tw, th = max(w, 8.0), max(h, 8.0); cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    for name in sys.argv[3:]:
        tracker = make[name](); out = [[x1, y1, x2, y2]]
        rect = (int(round(cx - tw / 2)), int(round(cy - th / 2)), int(round(tw)), int(round(th)))
        tracker.init(frames[0], rect)
        for img in frames[1:]:
            ok, (x, y, rw, rh) = tracker.update(img)
            if not ok:
                out.append(out[-1]); continue
            ow, oh = rw * w / tw, rh * h / th; ccx, ccy = x + rw / 2, y + rh / 2
            out.append([ccx - ow / 2, ccy - oh / 2, ccx + ow / 2, ccy + oh / 2])
        result[f"{name}{k}"] = np.asarray(out, dtype=np.float32)
np.savez(sys.argv[2], **result)
"""


def contrib_tracker(python: str, name: str, data: list) -> Callable[[Tensor, Tensor], Tensor]:
    """OpenCV contrib's ``name`` tracker (``kcf``: Henriques et al. 2015, ``csrt``: Lukezic et al.
    2017; both update online) run by another interpreter ``python`` that has
    ``opencv-contrib-python-headless``. All of ``data``'s sequences go through it in one call (the
    frames as BGR uint8 in a temporary ``.npz``); the returned function looks a sequence's boxes up
    by its first frame."""
    arrays: dict[str, np.ndarray] = {"count": np.array(len(data))}
    for k, (frames, target) in enumerate(data):
        gt, _ = target_track(target, frames.shape[0], "val")
        bgr = (frames.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)[..., ::-1]
        arrays[f"frames{k}"], arrays[f"box{k}"] = np.ascontiguousarray(bgr), gt[0].numpy()  # (T, H, W, 3)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **arrays)  # type: ignore[arg-type]
        subprocess.run(
            [python, "-c", _CONTRIB_RUNNER, f"{tmp}/in.npz", f"{tmp}/out.npz", name], check=True, timeout=3600
        )
        with np.load(Path(tmp) / "out.npz") as f:
            boxes = [torch.from_numpy(f[f"{name}{k}"]) for k in range(len(data))]
    clips = [frames for frames, _ in data]

    def track(frames: Tensor, init: Tensor) -> Tensor:
        k = next(i for i, f in enumerate(clips) if f is frames or torch.equal(f, frames))
        return boxes[k]

    return track


def score(tracker: Callable[[Tensor, Tensor], Tensor], data: list) -> dict:
    """OPE over ``data`` (success AUC, precision@20) and drift: the mean IoU with the truth over the
    last quarter of each clip's visible frames, averaged over the clips (``end_iou``)."""
    metric = OPEMetric()
    end = []
    for frames, target in data:
        gt, visible = target_track(target, frames.shape[0], "val")
        pred = tracker(frames, gt[0])  # (T, 4)
        metric.update({"boxes": pred[None]}, [target])
        seen = visible.nonzero().flatten()
        last = seen[len(seen) - max(1, len(seen) // 4) :]  # the last quarter of the visible frames
        end.append(float(box_iou(pred[last], gt[last]).diagonal().nan_to_num(0.0).mean()))
    r = metric.compute()
    return {
        "success_auc": round(r["success_auc"], 4),
        "precision_20": round(r["precision_20"], 4),
        "end_iou": round(sum(end) / len(end), 4),
        "clips": r["num_clips"],
    }


def self_check(model: SINT, frames: Tensor, init: Tensor) -> None:
    """The variants differ from :meth:`SINT.track` only by their update: with rate 0 / lr 0 they
    must give its boxes."""
    base = model.track(frames, init)
    if not torch.equal(ema_tracker(model, 0.0)(frames, init), base):
        raise RuntimeError("ema_tracker(rate=0) differs from SINT.track")
    if not torch.allclose(finetune_tracker(model, 0.0)(frames, init), base, atol=1e-3):
        raise RuntimeError("finetune_tracker(lr=0) differs from SINT.track")
    c = model.config
    saved = c.refine, c.refine_lambda
    try:
        c.refine, c.refine_lambda = True, 0.1
        refined = model.track(frames, init)
    finally:
        c.refine, c.refine_lambda = saved
    if not torch.equal(refine_tracker(model, 0.1)(frames, init), refined):
        raise RuntimeError("refine_tracker(0.1) differs from SINT.track with config.refine")


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
    p.add_argument("--no-ablation", action="store_true", help="skip the online-update variants")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights' init and the clip order")
    p.add_argument(
        "--steps", type=int, default=0, help="stop training after N steps (0: the --minutes budget only)"
    )
    p.add_argument("--json", default=None, help="also write the scores here (JSON)")
    p.add_argument(
        "--contrib-python", default=None, help="an interpreter with opencv-contrib: adds KCF, CSRT"
    )
    p.add_argument(
        "--refine-diagnostic", action="store_true", help="with --eval-checkpoint: one-frame refinement IoU"
    )
    p.add_argument(
        "--summarize", nargs="+", default=None, help="JSON files of runs: mean and range per tracker"
    )
    args = p.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    val = [ShapesVideo("val", num_images=args.val_clips, length=16)[i] for i in range(args.val_clips)]
    model = get_model("sint_narrow")
    untrained = get_model("sint_narrow").eval()
    untrained.load_state_dict(model.state_dict())
    assert isinstance(model, SINT) and isinstance(untrained, SINT)
    if args.eval_checkpoint:
        from structpred.engine.run import load_model

        model = load_model(args.eval_checkpoint)[0]
        assert isinstance(model, SINT), type(model).__name__
        if args.refine_diagnostic:
            refine_diagnostic(model.eval(), args.real)
            return
        evaluate(
            model.eval(), untrained, val, args.real, not args.no_ablation, args.contrib_python, args.json
        )
        return
    train = ShapesVideo("train", num_images=args.train_clips, length=8, cache=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, step, loss = time.time(), 0, float("nan")
    order = torch.randperm(len(train))
    while time.time() - start < args.minutes * 60 and not (args.steps and step >= args.steps):
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
    meta = {"seed": args.seed, "steps": step, "train_seconds": round(time.time() - start), "loss": loss}
    evaluate(
        model.eval(), untrained, val, args.real, not args.no_ablation, args.contrib_python, args.json, meta
    )


def evaluate(
    model: SINT,
    untrained: SINT,
    val: list,
    real: int,
    ablation: bool = True,
    contrib_python: str | None = None,
    json_path: str | None = None,
    meta: dict | None = None,
) -> None:
    """OPE of the trained SINT without updates, its online-updated and refined variants
    (``ablation``), the untrained network and the OpenCV baselines (NCC template matching, MIL;
    KCF and CSRT with ``contrib_python``) on each evaluation set; the scores also to ``json_path``."""
    sets = [("shapes-video val", val)]
    if real:
        from structpred.data.track_real import RealTrackingBench

        bench = RealTrackingBench("test", num_sequences=real, length=60, size=(120, 160), seed=0)
        sets.append(("track-real test", [bench[i] for i in range(real)]))
    trackers: list[tuple[str, Callable[[Tensor, Tensor], Tensor]]] = [
        ("sint_trained (no update)", model.track)
    ]
    if ablation:
        trackers += [
            ("sint_trained + query EMA 0.1", ema_tracker(model, 0.1)),
            ("sint_trained + query EMA 0.5", ema_tracker(model, 0.5)),
            ("sint_trained + query replaced (EMA 1.0)", ema_tracker(model, 1.0)),
            ("sint_trained + online fine-tune lr 1e-4", finetune_tracker(model, 1e-4)),
            ("sint_trained + online fine-tune lr 1e-3", finetune_tracker(model, 1e-3)),
            ("sint_trained + box refinement lambda 0.01", refine_tracker(model, 0.01)),
            ("sint_trained + box refinement lambda 0.1", refine_tracker(model, 0.1)),
            ("sint_trained + box refinement lambda 1", refine_tracker(model, 1.0)),
        ]
    trackers += [("sint_untrained", untrained.track), ("ncc_template", ncc_track), ("opencv_mil", mil_track)]
    self_check(model, val[0][0], target_track(val[0][1], val[0][0].shape[0], "val")[0][0])
    results: dict = {"meta": meta or {}, "scores": {}}
    for data_name, data in sets:
        extra, prep = [], {}
        for n in ("kcf", "csrt") if contrib_python else ():
            t0 = time.time()
            extra.append((f"opencv_{n}", contrib_tracker(str(contrib_python), n, data)))
            prep[f"opencv_{n}"] = time.time() - t0  # the tracking itself runs here, in one call
        for name, tracker in trackers + extra:
            t0 = time.time()
            r = score(tracker, data)
            r["seconds"] = round(time.time() - t0 + prep.get(name, 0.0), 1)
            results["scores"].setdefault(data_name, {})[name] = r
            print(data_name, "|", name, "|", r, flush=True)
        if json_path:
            Path(json_path).write_text(json.dumps(results, indent=1), encoding="utf-8")


def refine_diagnostic(model: SINT, real: int, lams: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)) -> None:
    """Box refinement without drift: in every frame of ``real`` ``track-real`` test sequences whose
    previous frame shows the target, search around the *true* previous box and print the mean IoU
    with the truth of the best candidate, and of it refined at each ridge weight in ``lams``
    (regressors fitted on frame 0 as in tracking)."""
    from structpred.data.track_real import RealTrackingBench

    bench = RealTrackingBench("test", num_sequences=real, length=60, size=(120, 160), seed=0)
    ious: dict[str, list[float]] = {"best candidate": [], **{f"refined lambda {lam:g}": [] for lam in lams}}
    c = model.config
    saved = c.refine_lambda
    for k in range(real):
        frames, target = bench[k]
        gt, visible = target_track(target, frames.shape[0], "real")
        T, _, H, W = frames.shape
        refiners = []
        for lam in lams:
            c.refine_lambda = lam
            refiners.append(model.fit_refiner(frames[0], gt[0]))
        c.refine_lambda = saved
        with torch.no_grad():
            query = model.start(frames[0], gt[0])
            for t in range(1, T):
                if not (bool(visible[t]) and bool(visible[t - 1])):
                    continue
                feats = model.features(frames[t : t + 1])
                truth = gt[t][None]
                best = model.step(feats, 0, gt[t - 1], query, (H, W))
                ious["best candidate"].append(float(box_iou(best[None], truth)[0, 0]))
                for lam, reg in zip(lams, refiners, strict=True):
                    box = model.step(feats, 0, gt[t - 1], query, (H, W), reg)
                    ious[f"refined lambda {lam:g}"].append(float(box_iou(box[None], truth)[0, 0]))
    for name, v in ious.items():
        print(f"track-real one-frame IoU | {name} | {sum(v) / len(v):.4f} over {len(v)} frames", flush=True)


def summarize(paths: list[str]) -> None:
    """Mean and range (min-max) over runs of each tracker's scores, as markdown rows."""
    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    print("runs:", [r["meta"] for r in runs])
    for data_name, trackers in runs[0]["scores"].items():
        print(f"\n{data_name} ({len(runs)} runs)\n| tracker | success AUC | precision@20 | end IoU |")
        print("|---|---|---|---|")
        for name in trackers:
            cells = []
            for key in ("success_auc", "precision_20", "end_iou"):
                v = [
                    r["scores"][data_name][name][key] for r in runs if name in r["scores"].get(data_name, {})
                ]
                cells.append(f"{statistics.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
            print(f"| {name} | " + " | ".join(cells) + " |")
        base = [r["scores"][data_name]["sint_trained (no update)"]["success_auc"] for r in runs]
        for name in trackers:
            v = [r["scores"][data_name][name]["success_auc"] for r in runs]
            diffs = ", ".join(f"{a - b:+.3f}" for a, b in zip(v, base, strict=True))
            print(f"  {name}: AUC minus no-update per run: {diffs}")


if __name__ == "__main__":
    main()
