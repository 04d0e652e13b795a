"""The ``structpred`` command line: ``structpred --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from . import __version__


def _key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict, values parsed as JSON when they parse (``3``, ``0.5``, ``[1,2]``)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _list_models(args: argparse.Namespace, rest: list[str]) -> int:
    from .models import list_models, model_info
    from .models.registry import parameter_count

    names = list_models(args.task)
    if not names:
        print("no models registered yet" if args.task is None else f"no models for task {args.task!r}")
        return 0
    rows = [("model", "task", "parameters", "loads weights of", "what")]
    for name in names:
        info = model_info(name)
        try:
            count = f"{parameter_count(name):,}"
        except ValueError:  # its size comes from the data (a vocabulary...)
            count = "from data"
        rows.append((name, info.task, count, ", ".join(info.peer_weights) or "-", info.summary))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    import importlib

    importlib.import_module(f"structpred.bench.{args.suite}").main(rest)
    return 0


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from .engine import NonFiniteLossError, TrainConfig
    from .engine import run as engine_run

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        clip_grad_norm=args.clip_grad,
        amp=args.amp,
        seed=args.seed,
        num_workers=args.workers,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        keep_last=args.keep_last,
        progress=not args.no_progress,
        device=args.device,
    )
    try:
        trainer, metrics = engine_run.train(
            args.model,
            args.data,
            config,
            args.out,
            resume=args.resume,
            model_kwargs=_key_values(args.model_arg, "--model-arg"),
            data_kwargs=_key_values(args.data_arg, "--data-arg"),
        )
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if trainer.ctx.is_main:
        print(_format_metrics(metrics))
        print(f"checkpoints and logs in {args.out}")
    from .engine.distributed import shutdown

    shutdown()
    return 0


def _eval(args: argparse.Namespace, rest: list[str]) -> int:
    from .engine import run as engine_run

    metrics = engine_run.evaluate(
        args.checkpoint,
        args.data,
        args.split,
        args.batch_size,
        args.device,
        _key_values(args.data_arg, "--data-arg"),
        pr_plot=args.pr_plot,
    )
    print(_format_metrics(metrics))
    return 0


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    from .demo import SEG_MODEL, run_demo, run_segmentation_demo

    epochs = {} if args.epochs is None else {"epochs": args.epochs}  # None: the demo's own default
    metrics = run_demo(args.out, pictures=args.pictures, **epochs)
    print("COCO box metrics of fasterrcnn_narrow_fpn on the shapes world's test split:")
    print(_format_metrics(metrics))
    if args.seg_epochs > 0:
        seg = run_segmentation_demo(args.out, epochs=args.seg_epochs, pictures=args.pictures)
        print(f"Semantic segmentation metrics of {SEG_MODEL} on the shapes world's test split:")
        print(_format_metrics({k: v for k, v in seg.items() if k != "confusion_matrix"}))
    print(f"checkpoints, PR curves and pictures of predictions in {args.out}")
    return 0


def _predict(args: argparse.Namespace, rest: list[str]) -> int:
    from .engine.predict import predict_images

    path = predict_images(args.checkpoint, args.images, args.out, args.score_threshold, args.device)
    print(f"pictures and {path.name} in {path.parent}")
    return 0


def _export(args: argparse.Namespace, rest: list[str]) -> int:
    from .data.export import export_dataset
    from .data.registry import build_dataset

    kwargs = _key_values(args.data_arg, "--data-arg")
    for split in args.splits:
        dataset = build_dataset(args.dataset, split, **kwargs)
        path = export_dataset(dataset, args.out, args.format, split=split, limit=args.limit)
        print(f"{split}: {path}")
    return 0


def _format_metrics(metrics: dict[str, Any]) -> str:
    lines = []
    for key, value in metrics.items():
        if hasattr(value, "numel") and value.numel() == 1:
            value = float(value)
        if isinstance(value, float):
            lines.append(f"{key:>24s}  {value:.4f}")
        elif hasattr(value, "tolist"):
            lines.append(f"{key:>24s}  {[round(v, 4) for v in value.flatten().tolist()]}")
        else:
            lines.append(f"{key:>24s}  {value}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="structpred",
        description="Deep structured prediction: boxes, masks, label maps, flow, depth, tracks.",
    )
    parser.add_argument("--version", action="version", version=f"structpred {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="train a small detector and segmenter on the shapes world, draw")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's, 2)")
    p.add_argument("--seg-epochs", type=int, default=2, help="segmentation epochs (0: skip that step)")
    p.add_argument("--pictures", type=int, default=8, help="test images to draw predictions on")
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "list-models", help="list the registered models: task, parameters, peer weights they load"
    )
    p.add_argument("--task", default=None, help="only the models of this task (e.g. detection)")
    p.set_defaults(func=_list_models)

    p = sub.add_parser(
        "bench",
        help="time structpred against its peer (ratios from one run)",
        description="Time structpred against its peer; extra options go to the suite "
        "(e.g. structpred bench ops --repeats 25).",
    )
    p.add_argument(
        "suite",
        choices=["ops", "metrics", "proposals", "detection", "mask_rcnn", "crf", "segmentation", "rnn"],
        help="ops: vs torchvision.ops; metrics: vs pycocotools; proposals: Selective Search recall; "
        "detection: Faster R-CNN vs torchvision; mask_rcnn: Mask R-CNN inference vs torchvision; "
        "crf: dense CRF vs pydensecrf2; segmentation: crf + mask_rcnn; "
        "rnn: RNN/LSTM vs torch.nn",
    )
    p.set_defaults(func=_bench)

    data_help = (
        "shapes | digits | digits-distorted | digit-canvas | trees | nuclei | shakespeare | japanese-vowels "
        "| sunspots | adding | coco:DIR | voc:DIR | yolo:DIR"
    )
    p = sub.add_parser("train", help="train a registered model (also under torchrun for many processes)")
    p.add_argument("--model", required=True, help="registered model name (structpred list-models)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    p.add_argument("--clip-grad", type=float, default=None, help="max gradient norm")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps (0: every epoch end)")
    p.add_argument("--eval-every", type=int, default=1, help="epochs between validations (the last always)")
    p.add_argument("--keep-last", type=int, default=3, help="checkpoints kept")
    p.add_argument("--out", default="runs/latest", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--model-arg", action="append", metavar="K=V", help="builder keyword argument")
    p.add_argument("--data-arg", action="append", metavar="K=V", help="dataset keyword argument")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint with the task's standard metric")
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-*.json")
    p.add_argument("--data", default=None, help=f"{data_help} (default: the one trained on)")
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--data-arg", action="append", metavar="K=V", help="dataset keyword argument")
    p.add_argument("--pr-plot", default=None, metavar="PNG", help="detection: write PR curves here")
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "predict",
        help="run a trained model on images: its task's outputs (drawn PNGs + COCO results json, "
        "label-map PNGs, classes) under --out",
    )
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-*.json")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument(
        "--out",
        default=None,
        help="output folder; mirrors the inputs' sub-folders, never beside them "
        "(default: a new numbered folder under out/predict)",
    )
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw boxes at or above this score")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_predict)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    e = data_sub.add_parser("export", help="write a dataset in a standard format (images + annotations)")
    e.add_argument("dataset", help="shapes | digit-canvas | trees | nuclei | ...")
    e.add_argument("--format", choices=["coco", "voc", "yolo"], required=True)
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--splits", nargs="+", default=["train", "val"])
    e.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    e.add_argument("--data-arg", action="append", metavar="K=V", help="dataset keyword argument")
    e.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":  # only bench passes extra options on to its suite
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args, rest))
    except ValueError as err:  # bad input: one clear line, not a traceback (-v shows it)
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
