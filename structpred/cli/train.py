"""``structpred train``: train a registered model on a dataset spec (also under torchrun)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import format_metrics, key_values
from ._data_args import add_data_arguments, data_kwargs


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Train; print the final metrics and where the run went."""
    from ..engine import NonFiniteLossError, TrainConfig
    from ..engine import run as engine_run

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
            model_kwargs=key_values(args.model_arg, "--model-arg"),
            data_kwargs=data_kwargs(args),
        )
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if trainer.ctx.is_main:
        print(format_metrics(metrics))
        print(f"checkpoints and logs in {args.out}")
    from ..engine.distributed import shutdown

    shutdown()
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``train``."""
    p = sub.add_parser("train", help="train a registered model (also under torchrun for many processes)")
    p.add_argument("--model", required=True, help="registered model name (structpred list-models)")
    add_data_arguments(p, required=True)
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
    p.set_defaults(func=run)
