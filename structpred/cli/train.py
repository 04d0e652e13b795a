"""``structpred train``: train a registered model on a dataset spec (also under torchrun).

``--resume RUN_DIR`` continues a run from its newest checkpoint with the recorded config: no
other flag is needed. A run-changing flag given with it (model, data, optimizer, lr, schedule,
epochs, batch size, ``--model-arg`` / ``--data-arg``, weights, freeze...) that differs from the
checkpoint is refused with the list of differences, unless ``--override`` applies it (recorded
in the checkpoint's ``config.overrides``). Device, workers and progress are this process's
business and always come from the command line; ``--keep-last``, ``--checkpoint-every`` and
``--eval-every`` from the command line when given, else from the checkpoint.

``--augment SPEC`` (:mod:`structpred.data.augment`) is recorded in its canonical form (a preset
expanded to its fields) and compared in that form on resume. ``--ema DECAY[,tau=N]`` (a weight
average, :mod:`structpred.engine.ema`) likewise, as ``DECAY,tau=N``.

The old form, ``--resume`` with no directory, resumes ``--out`` (and, with ``--model`` and
``--data`` given, starts a new run there when it holds no checkpoint yet).

Run-changing flags default to ``None`` here, so that "given" is known; their real defaults are
:class:`~structpred.engine.TrainConfig`'s (shown in ``--help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._common import format_metrics, key_values
from ._data_args import add_data_arguments, data_kwargs

RUNS = Path("runs")  # default --out: the first free runs/001, runs/002, ...
# flag dest -> TrainConfig field, for the flags that change a run
RUN_FLAGS = {
    "model": "model_name", "data": "data", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "optimizer": "optimizer", "schedule": "schedule", "warmup": "warmup_steps", "clip_grad": "clip_grad_norm",
    "amp": "amp", "seed": "seed", "weights": "weights", "freeze": "freeze", "num_classes": "num_classes",
    "image_size": "image_size",
}  # fmt: skip
# TrainConfig field -> the flag a user types (the rest: --field-name)
FLAG_OF = {
    "model_name": "--model", "warmup_steps": "--warmup", "clip_grad_norm": "--clip-grad",
    "model_args": "--model-arg", "data_kwargs": "--data-arg", "num_workers": "--workers",
}  # fmt: skip


def flag_name(setting: str) -> str:
    """The command-line flag of a config setting (``model_args.width`` -> ``--model-arg width``)."""
    field, _, key = setting.partition(".")
    flag = FLAG_OF.get(field, "--" + field.replace("_", "-"))
    return f"{flag} {key}" if key else flag


def _given_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The run-changing settings given on the command line, as config fields."""
    changes = {
        field: getattr(args, dest) for dest, field in RUN_FLAGS.items() if getattr(args, dest) is not None
    }
    if args.model_arg:
        changes["model_args"] = key_values(args.model_arg, "--model-arg")
    if args.augment is not None:  # compared in its canonical form ("yolo" = its fields)
        from ..data.augment import canonical_augment

        changes["augment"] = canonical_augment(args.augment)
    if args.ema is not None:  # compared canonical ("0.999" = "0.999,tau=2000")
        from ..engine.ema import canonical_ema

        changes["ema"] = canonical_ema(args.ema)
    given_data = data_kwargs(args)  # --data-arg, --val-fraction / --split-seed, the task of data on disk
    if given_data:
        changes["data_kwargs"] = given_data
    return changes


# flag dest -> TrainConfig field, for this process's flags (checked up front like RUN_FLAGS)
HARMLESS_FLAGS = {
    "workers": "num_workers", "checkpoint_every": "checkpoint_every", "eval_every": "eval_every",
    "keep_last": "keep_last",
}  # fmt: skip


def check_flags(args: argparse.Namespace) -> None:
    """Refuse a bad setting (``--lr inf``, ``--clip-grad -1``, ``--epochs 0``, ``--workers -1``...)
    before any data is read or a run directory is made: one ``ValueError`` naming the flag."""
    from ..engine.recipe import config_problem

    for dest, field in {**RUN_FLAGS, **HARMLESS_FLAGS}.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        problem = config_problem(field, value)
        if problem is not None:
            raise ValueError(f"{flag_name(field)} {value}: {problem}")
    if getattr(args, "augment", None) is not None:  # one line naming the bad item
        from ..data.augment import canonical_augment

        canonical_augment(args.augment, "--augment")
    if getattr(args, "ema", None) is not None:
        from ..engine.ema import canonical_ema

        canonical_ema(args.ema, "--ema")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Harmless settings: this process's (device, workers, progress) and the ones given."""
    out: dict[str, Any] = {
        "device": args.device,
        "num_workers": args.workers or 0,
        "progress": not args.no_progress,
    }
    for dest in ("checkpoint_every", "eval_every", "keep_last"):
        if getattr(args, dest) is not None:
            out[dest] = getattr(args, dest)
    return out


def _report(line: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # one process of a torchrun prints
        print(line, flush=True)


def _fresh(args: argparse.Namespace, out: str) -> tuple[Any, dict[str, Any]]:
    from ..engine import TrainConfig
    from ..engine import run as engine_run

    if args.model is None or args.data is None:
        raise ValueError("train needs --model and --data (or --resume RUN_DIR to continue a run)")
    # The given flags that are plain config fields (model, data, weights... go to train's arguments).
    fields = set(TrainConfig.__dataclass_fields__) - {
        "model_name",
        "data",
        "weights",
        "freeze",
        "num_classes",
        "image_size",
    }
    given = {
        field: getattr(args, dest) for dest, field in RUN_FLAGS.items() if getattr(args, dest) is not None
    }
    flags = {k: v for k, v in given.items() if k in fields}
    config = TrainConfig(**flags, augment=args.augment, ema=args.ema, **_settings(args))
    return engine_run.train(
        args.model,
        args.data,
        config,
        out,
        resume=args.resume is not None,
        model_kwargs=key_values(args.model_arg, "--model-arg"),
        data_kwargs=data_kwargs(args),
        weights=args.weights,
        freeze=args.freeze,
        num_classes=args.num_classes,
        image_size=args.image_size,
        report=_report,
    )


def _resume(args: argparse.Namespace, run_dir: str) -> tuple[Any, dict[str, Any]]:
    from ..engine import checkpoint as ckpt
    from ..engine import run as engine_run

    path, meta = ckpt.read_meta(run_dir)  # validated; a run resumes from where it stood:
    missing = [key for key in ("epoch", "step_in_epoch") if key not in meta]
    if missing:
        raise ValueError(f"{path}: not a training checkpoint (no {' or '.join(missing)}); cannot resume")
    name = meta["config"].get("model_name")
    if name:
        from ..tasks import task_of

        try:
            task_of(str(name))
        except ValueError as err:
            raise ValueError(f"{path}: config.model_name: {err}") from None

    try:
        return engine_run.resume(
            run_dir, _given_changes(args), args.override, _settings(args), report=_report
        )
    except engine_run.ResumeMismatch as err:
        lines = "; ".join(
            f"{flag_name(name)}: checkpoint {old!r}, command line {new!r}"
            for name, old, new in err.differences
        )
        raise ValueError(
            f"--resume {run_dir}: the command line changes the run; add --override to apply it "
            f"(recorded in the checkpoint), or drop these flags: {lines}"
        ) from None


def _new_run_folder() -> str:
    """The first free ``runs/NNN``; under torchrun every process must agree, so --out is required."""
    from ..tasks.outputs import next_run_folder

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("under torchrun give --out: the processes must write one run directory")
    return str(next_run_folder(RUNS))


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Train (or resume); print the per-epoch lines, the final table and where the run went."""
    from ..engine import NonFiniteLossError
    from ..engine import checkpoint as ckpt
    from ..tasks import task_of

    check_flags(args)
    if args.override and args.resume is None:
        raise ValueError("--override applies to --resume RUN_DIR only")
    if args.resume == "" and args.out is None:
        raise ValueError("--resume needs the run directory: --resume RUN_DIR")
    out = args.out or args.resume or _new_run_folder()  # --resume RUN_DIR names the run (torchrun too)
    if args.resume:  # --resume RUN_DIR
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise ValueError(f"--out {args.out} and --resume {args.resume} name two runs; give --resume only")
        out = args.resume
    try:
        if args.resume is not None and os.environ.get("RANK", "0") == "0":
            ckpt.clean_partial(out)  # what a killed save left (one process: the others may be saving)
        if args.resume is not None and ckpt.latest_checkpoint(out) is not None:
            trainer, metrics = _resume(args, out)
        else:
            if args.resume is not None:
                if args.model is None:
                    raise ValueError(f"--resume {out}: no checkpoint (ckpt-*.json) in this directory")
                _report(f"--resume: no checkpoint in {out} yet; starting a new run there")
            trainer, metrics = _fresh(args, out)
    except (NonFiniteLossError, ckpt.NonFiniteWeightsError) as err:  # the run failed, not the input
        print(f"error: {err}", file=sys.stderr)
        return 1
    if trainer.ctx.is_main:
        kind = task_of(trainer.config.model_name).headline.kind
        print(format_metrics(metrics, "val", kind) if metrics else "no validation data: no metrics")
        if trainer.best is not None:
            b = trainer.best
            print(f"best: epoch {b['epoch']}, val {b['metric']} {b['value']:.4g} ({out}/{b['checkpoint']})")
        print(f"checkpoints and logs in {out}")
    from ..engine.distributed import shutdown

    shutdown()
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``train``."""
    from ..engine import TrainConfig

    d = TrainConfig()  # the real defaults of the None-defaulted flags (see the module docstring)
    p = sub.add_parser(
        "train",
        help="train a registered model (also under torchrun for many processes)",
        description="Train a registered model on a dataset; checkpoints, log.csv and the best "
        "checkpoint (by the task's metric) go to --out. --resume RUN_DIR continues a run with "
        "the config recorded in its checkpoint.",
    )
    p.add_argument("--model", default=None, help="registered model name (see `structpred list-models`)")
    add_data_arguments(p, required=False)
    p.add_argument(
        "--model-arg",
        action="append",
        metavar="K=V",
        help="builder keyword argument, repeatable (each model's, with defaults: `structpred list-models`)",
    )
    run_ = p.add_argument_group("the run (recorded; on --resume compared with the checkpoint)")
    run_.add_argument("--epochs", type=int, default=None, help=f"(default: {d.epochs})")
    run_.add_argument("--batch-size", type=int, default=None, help=f"per process (default: {d.batch_size})")
    run_.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: {d.lr})")
    run_.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help=f"(default: {d.optimizer})")
    run_.add_argument(
        "--schedule", choices=["cosine", "step", "constant"], default=None, help=f"(default: {d.schedule})"
    )
    run_.add_argument("--warmup", type=int, default=None, help=f"warm-up steps (default: {d.warmup_steps})")
    run_.add_argument(
        "--clip-grad", type=float, default=None, help="max gradient norm (default: no clipping)"
    )
    run_.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision (default: off)")
    run_.add_argument("--seed", type=int, default=None, help=f"(default: {d.seed})")
    run_.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="the model's input size: the longer side of each image becomes N (detectors: "
        "min_size=max_size=N; classifiers: input_size=N; segmenters: the data is resampled) "
        "(default: the model's own)",
    )
    run_.add_argument(
        "--augment",
        default=None,
        metavar="SPEC",
        help="training augmentation, comma separated: hflip[=P], scale=F, translate=F, hsv=F, hue=F, "
        "min_visible=F, or a preset (yolo, yolo_v1, none) then changes, e.g. "
        "'hflip,scale=0.2,translate=0.2,hsv=0.5' or 'yolo,scale=0.3' (docs/augment.md) (default: none)",
    )
    run_.add_argument(
        "--ema",
        default=None,
        metavar="DECAY[,tau=N]",
        help="keep an exponential moving average of the weights: decay DECAY in (0, 1) ramped in as "
        "DECAY*(1-exp(-step/N)) (default N 2000, ultralytics'); validation, the best checkpoint, eval, "
        "predict and export use it (docs/ema.md), e.g. 0.999,tau=500 (default: none)",
    )
    w = p.add_argument_group("weights in (fine-tuning)")
    w.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="start from a run/checkpoint of ours or a torchvision state dict (.pth); layers whose "
        "shape depends on the class count are re-initialised (default: random initialisation)",
    )
    w.add_argument(
        "--num-classes", type=int, default=None, metavar="N", help="class count (default: the data's)"
    )
    w.add_argument(
        "--freeze",
        default=None,
        metavar="SPEC",
        help="parts that do not train: backbone, backbone:N (its first N stages) or parameter-name "
        "prefixes, comma separated (default: none)",
    )
    r = p.add_argument_group("resume")
    r.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_DIR",
        help="continue RUN_DIR (no RUN_DIR: --out) from its newest checkpoint with its recorded config",
    )
    r.add_argument("--override", action="store_true", help="with --resume: apply (and record) changed flags")
    h = p.add_argument_group("this process (never recorded as changes)")
    h.add_argument(
        "--out", default=None, help=f"run directory (default: the first free {RUNS}/001, {RUNS}/002...)"
    )
    h.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    h.add_argument("--workers", type=int, default=None, help="data loader processes (default: 0)")
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    h.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help=f"steps between checkpoints; 0: every epoch end (default: {d.checkpoint_every})",
    )
    h.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help=f"epochs between validations; the last always (default: {d.eval_every})",
    )
    h.add_argument(
        "--keep-last",
        type=int,
        default=None,
        help=f"checkpoints kept, plus the best (default: {d.keep_last})",
    )
    p.set_defaults(func=run)
