"""Real sequence tasks trained by the common engine: ``python experiments/sequences.py``.

Four experiments, run one after another through ``structpred.engine.run.train`` (the code path
of ``structpred train``), each then evaluated on its test split with the task's metric:

* char-LM: ``lstm_charlm`` on Shakespeare, bits per character on the held-out play (*Hamlet*),
  and a 300-character sample;
* Japanese Vowels: ``lstm_vowels`` vs ``rnn_vowels``, test accuracy (9 speakers);
* sunspots: ``lstm_sunspots``, test RMSE (1969-2008, sunspot numbers) vs predicting last year's value;
* adding problem, T = 150: ``lstm_adding`` (chrono-initialised) vs ``rnn_adding``, test MSE vs
  predicting the mean (1/6).

Prints a Markdown table with wall times and the ``structpred train`` command of each run.
``--only NAME`` runs a single experiment; ``--threads`` sets torch's threads (default 2).

The data specs are registered in ``data/registry.py`` (this script also adds any missing one at
run time); each test split is scored with the metric of the model's task (:mod:`structpred.tasks`).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

import structpred.models.sequence  # noqa: F401  (registers the sequence builders)
from structpred.data import registry
from structpred.data.sequences import SPECS, AddingProblem, Shakespeare, Sunspots
from structpred.engine import run
from structpred.engine.trainer import TrainConfig
from structpred.models.sequence import CharLM
from structpred.tasks import task_of
from structpred.tasks.base import Metric


@dataclass
class Experiment:
    name: str
    model: str
    data: str
    train: dict[str, Any]  # TrainConfig fields
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_kwargs: dict[str, Any] = field(default_factory=dict)

    def command(self, out: Path) -> str:
        flags = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "optimizer": "--optimizer",
                 "clip_grad_norm": "--clip-grad", "seed": "--seed", "schedule": "--schedule"}
        parts = ["structpred train", f"--model {self.model}", f"--data {self.data}"]
        parts += [f"{flags[k]} {v}" for k, v in self.train.items() if k in flags]
        parts += [f"--model-arg {k}={v}" for k, v in self.model_kwargs.items()]
        parts += [f"--data-arg {k}={v}" for k, v in self.data_kwargs.items()]
        return " ".join(parts + ["--no-progress", f"--out {out / self.name}"])


_ADAMW = {"optimizer": "adamw", "clip_grad_norm": 1.0, "seed": 0}  # weight decay: the CLI's 1e-4
EXPERIMENTS = [
    Experiment("charlm", "lstm_charlm", "shakespeare",
               {**_ADAMW, "epochs": 1, "batch_size": 32, "lr": 0.005},
               {"hidden_size": 128, "embed_dim": 32}, {"seq_len": 64}),
    Experiment("vowels-lstm", "lstm_vowels", "japanese-vowels",
               {**_ADAMW, "epochs": 40, "batch_size": 16, "lr": 0.005}),
    Experiment("vowels-rnn", "rnn_vowels", "japanese-vowels",
               {**_ADAMW, "epochs": 40, "batch_size": 16, "lr": 0.005}),
    Experiment("sunspots-lstm", "lstm_sunspots", "sunspots",
               {**_ADAMW, "epochs": 100, "batch_size": 16, "lr": 0.005}, {}, {"window": 20}),
    # constant lr: the LSTM first sits on the predict-the-mean plateau (~600 steps), then drops
    Experiment("adding-lstm", "lstm_adding", "adding",
               {**_ADAMW, "epochs": 7, "batch_size": 50, "lr": 0.003, "schedule": "constant"}, {},
               {"length": 150}),
    Experiment("adding-rnn", "rnn_adding", "adding",
               {**_ADAMW, "epochs": 7, "batch_size": 50, "lr": 0.003, "schedule": "constant"}, {},
               {"length": 150}),
]  # fmt: skip


def _register_specs() -> None:
    """Make ``--data shakespeare`` etc. known to ``build_dataset`` (no-op once registry.py lists them)."""
    for name, build in SPECS.items():
        registry.BUILDERS.setdefault(name, build)


def _metric(name: str, model: nn.Module, dataset: Dataset) -> Callable[[], Metric] | None:
    """The engine's metric for the task of the registered model ``name``."""
    return task_of(name).metric(model, dataset)


def _baseline(exp: Experiment, test: Dataset) -> str:
    if exp.data == "sunspots":
        assert isinstance(test, Sunspots)
        # last year's value minus this year's, in sunspot numbers
        err = [(float(test[i][0][-1, 0]) - float(test[i][1]["value"])) * test.target_scale
               for i in range(len(test))]
        return f"last value: RMSE {math.sqrt(sum(e * e for e in err) / len(err)):.2f}"
    if exp.data == "adding":
        assert isinstance(test, AddingProblem)
        mse = sum((float(test[i][1]["value"]) - 1.0) ** 2 for i in range(len(test))) / len(test)
        return f"predict 1 (the mean): MSE {mse:.4f}"
    if exp.data == "japanese-vowels":
        return "chance: 0.111"
    return "uniform: 6.38 bpc (log2 83)"


def run_experiment(exp: Experiment, out: Path, log: logging.Logger) -> dict[str, Any]:
    """Train ``exp`` through the engine, evaluate on its test split; the row of the table."""
    tic = time.perf_counter()
    config = TrainConfig(**exp.train, progress=False, log_every=50)
    model_kwargs = dict(exp.model_kwargs)
    if exp.model == "lstm_charlm":  # the vocabulary comes from the data (an engine hook could pass it)
        train_set = registry.build_dataset(exp.data, "train", **exp.data_kwargs)
        assert isinstance(train_set, Shakespeare)
        model_kwargs.setdefault("vocab", train_set.vocab_chars)
    trainer, val = run.train(exp.model, exp.data, config, out / exp.name, model_kwargs=model_kwargs,
                             data_kwargs=exp.data_kwargs)
    train_s = time.perf_counter() - tic
    test = registry.build_dataset(exp.data, "test", **exp.data_kwargs)
    trainer.metric = _metric(exp.model, trainer.model, test)
    metrics = trainer.evaluate(test)
    row: dict[str, Any] = {"name": exp.name, "model": exp.model, "steps": trainer.step,
                           "train_s": train_s, "total_s": time.perf_counter() - tic,
                           "baseline": _baseline(exp, test), "command": exp.command(out)}
    if "bpc" in metrics:
        row["result"] = f"test bpc {metrics['bpc']:.3f} (val loss {val.get('loss', float('nan')):.3f} nats)"
        model = trainer.model
        assert isinstance(model, CharLM)
        row["sample"] = model.sample("HAMLET.\n", 300, temperature=0.8,
                                     generator=torch.Generator().manual_seed(0))
    elif "accuracy" in metrics:
        row["result"] = f"test accuracy {float(metrics['accuracy']):.3f}"
    elif exp.data == "adding":
        row["result"] = f"test MSE {metrics['mse']:.4f}"
    else:
        row["result"] = f"test RMSE {metrics['rmse']:.2f} (MAE {metrics['mae']:.2f})"
    log.info("%s: %s in %.0f s", exp.name, row["result"], row["total_s"])
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| experiment | model | result | baseline | steps | wall (train + test) | command |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['model']}` | {r['result']} | {r['baseline']} | {r['steps']} | "
                     f"{r['total_s']:.0f} s | `{r['command']}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=[e.name for e in EXPERIMENTS], action="append")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/sequences"))
    parser.add_argument("--epochs", type=int, default=None, help="override every experiment's epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("sequences")
    torch.set_num_threads(args.threads)
    _register_specs()
    rows = []
    for exp in EXPERIMENTS:
        if args.only and exp.name not in args.only:
            continue
        if args.epochs is not None:
            exp.train["epochs"] = args.epochs
        rows.append(run_experiment(exp, args.out, log))
    print(f"\n{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print(table(rows))
    for r in rows:
        if "sample" in r:
            print(f"\n{r['name']} sample (prefix 'HAMLET.\\n', temperature 0.8):\n\n```\n{r['sample']}\n```")


if __name__ == "__main__":
    main()
