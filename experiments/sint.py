"""SINT trained on the shapes world's clips; the lecture's ablation (no updates vs online updates
with its own predictions); OpenCV baselines (NCC template matching, MIL).

    .venv/bin/python experiments/sint.py --minutes 9 --train-clips 600 --val-clips 60 --real 10 \
        --save out/sint_run
    .venv/bin/python experiments/sint.py --eval-checkpoint out/sint_run --val-clips 60 --real 10

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
- the same network untrained (random weights);
- OpenCV peers (experiments and benchmarks only): ``cv2.matchTemplate`` (TM_CCOEFF_NORMED, the
  first-frame template, searched within 2 box sides of the previous box) and ``cv2.TrackerMIL``
  (online boosting; KCF / CSRT are in the contrib build only, absent from the headless one).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

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
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    val = [ShapesVideo("val", num_images=args.val_clips, length=16)[i] for i in range(args.val_clips)]
    model = get_model("sint_narrow")
    untrained = get_model("sint_narrow").eval()
    untrained.load_state_dict(model.state_dict())
    assert isinstance(model, SINT) and isinstance(untrained, SINT)
    if args.eval_checkpoint:
        from structpred.engine.run import load_model

        model = load_model(args.eval_checkpoint)[0]
        assert isinstance(model, SINT), type(model).__name__
        evaluate(model.eval(), untrained, val, args.real, not args.no_ablation)
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
    evaluate(model.eval(), untrained, val, args.real, not args.no_ablation)


def evaluate(model: SINT, untrained: SINT, val: list, real: int, ablation: bool = True) -> None:
    """OPE of the trained SINT without updates, its online-updated variants (``ablation``), the
    untrained network and the OpenCV baselines (NCC template matching, MIL) on each evaluation set."""
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
        ]
    trackers += [("sint_untrained", untrained.track), ("ncc_template", ncc_track), ("opencv_mil", mil_track)]
    for data_name, data in sets:
        for name, tracker in trackers:
            t0 = time.time()
            print(data_name, "|", name, "|", score(tracker, data), f"{time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
