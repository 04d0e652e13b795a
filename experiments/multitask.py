"""Issue 21 trained for real: the unified multi-task network vs its single-task networks, its
cost, and the four loss weightings, on the shapes world, several seeds.

Command (``--pilot``: step times at 128 / 256 px; then every run trained by the engine on one
thread, ``--jobs`` runs at a time, a run whose ``result.json`` exists is kept; then the inference
timing on 2 threads, ``results.json`` and ``results.md`` under ``--out``)::

    OMP_NUM_THREADS=1 python experiments/multitask.py --out /tmp/mt_exp/main --pilot
    OMP_NUM_THREADS=1 python experiments/multitask.py --out /tmp/mt_exp/main --seeds 0 1 --ablation --jobs 2
    python experiments/multitask.py --out /tmp/mt_exp/main --table     # reprint the tables

Runs (``--configs``), all ``multitask_narrow`` (the narrow backbone + FPN P2..P7, the same
initialisation of the shared trunk for a seed), all with the same recipe:

* ``unified``: the four heads (detection, semantic, parts, depth), fixed weights 1;
* ``single_<head>``: that head alone (``heads=("<head>",)``): the single-task baselines;
* ``uncertainty``, ``dwa``, ``gradnorm``: the four heads under that weighting (DWA's window =
  one epoch's steps, temperature 2; GradNorm alpha 1.5 on the FPN's output convolutions);
* ``detection+<head>`` (``--ablation``): detection with one other head (which task helps which).

Recipe: ShapesWorld train (``--train-images``, 128 px, rendered once and cached) for ``--epochs``
epochs of batch ``--batch`` (the same steps for every run; the data order depends on the seed
only), AdamW lr ``--lr``, ``--warmup`` steps of linear warm-up then cosine, the engine's other
defaults (weight decay 1e-4, none on the weighting's parameters). Each run is scored once, at
its end, on ShapesWorld val (``--val-images``) by the ``multi_task`` task's metric: detection
COCO ``map`` / ``map_50``, semantic and parts ``miou``, depth ``abs_rel`` / ``a1`` (metric depth
through the camera), and ``score`` (the mean of the heads' headlines, AbsRel as 1 - AbsRel).

Cost: parameters, and inference time (eval, ``no_grad``, 2 threads, after every run is done) of
the seed-0 ``unified`` model vs its ``single_*`` models run one after another on the same val
images: batch 1 and batch 8, the models interleaved in each of ``--repeats`` rounds, median.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HEADS = ("detection", "semantic", "parts", "depth")
# per head: the figures reported (key of the multi_task metric, higher is better)
FIGURES: dict[str, tuple[tuple[str, bool], ...]] = {
    "detection": (("detection/map_50", True), ("detection/map", True)),
    "semantic": (("semantic/miou", True),),
    "parts": (("parts/miou", True),),
    "depth": (("depth/abs_rel", False), ("depth/a1", True)),
}
SCHEMES = ("fixed", "uncertainty", "dwa", "gradnorm")
MAIN = ["unified", "uncertainty", "dwa", "gradnorm", *(f"single_{h}" for h in HEADS)]  # longest first
ABLATION = [f"detection+{h}" for h in HEADS[1:]]  # the pairs: which head helps detection, and back
TOLERANCE = 0.02  # the "within 2 points"
LOG = logging.getLogger("multitask")


def config_of(name: str) -> tuple[tuple[str, ...], str]:
    """``(heads, weighting)`` of a run name (``ValueError`` for an unknown name)."""
    if name == "unified":
        return HEADS, "fixed"
    if name in SCHEMES[1:]:
        return HEADS, name
    kind, _, head = name.partition("_")
    if head in HEADS and kind == "single":
        return (head,), "fixed"
    pair = tuple(name.split("+"))
    if len(pair) == 2 and set(pair) <= set(HEADS) and pair[0] != pair[1]:
        return pair, "fixed"
    raise ValueError(f"unknown run {name!r}; runs are {', '.join(MAIN + ABLATION)}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/mt_exp/main"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", default=",".join(MAIN), help="comma list of runs")
    p.add_argument("--ablation", action="store_true", help="also the detection+<head> runs")
    p.add_argument("--ablation-seeds", type=int, nargs="+", help="their seeds (default --seeds)")
    p.add_argument("--input-size", type=int, default=128, help="the shorter side the network sees")
    p.add_argument("--train-images", type=int, default=1600)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=60, help="steps")
    p.add_argument("--gradnorm-alpha", type=float, default=1.5)
    p.add_argument("--repeats", type=int, default=15, help="timing rounds")
    p.add_argument("--jobs", type=int, default=2, help="training runs at a time (one thread each)")
    p.add_argument("--table", action="store_true", help="only rewrite results.md from results.json")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--pilot", action="store_true", help="only time training steps at 128 / 256 px")
    p.add_argument("--one", nargs=2, metavar=("RUN", "SEED"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- one run


def train_one(a: argparse.Namespace, name: str, seed: int) -> dict[str, Any]:
    """Train run ``name`` with ``seed`` (one thread), score it on val; its ``result.json``."""
    import torch

    from structpred.data.shapes import ShapesWorld
    from structpred.engine.recipe import ablation_config
    from structpred.engine.trainer import Trainer, seed_everything
    from structpred.models import get_model
    from structpred.tasks import get_task

    torch.set_num_threads(1)
    heads, weighting = config_of(name)
    train_set = ShapesWorld("train", num_images=a.train_images, cache=True)
    val_set = ShapesWorld("val", num_images=a.val_images)
    steps_per_epoch = a.train_images // a.batch
    weighting_args: dict[str, Any] = {}
    if weighting == "dwa":
        weighting_args = {"period": steps_per_epoch}
    elif weighting == "gradnorm":
        weighting_args = {"alpha": a.gradnorm_alpha}
    task = get_task("multi_task")
    asked = {"heads": list(heads), "input_size": a.input_size, "weighting": weighting}
    kwargs = task.model_kwargs(train_set, {**asked, "weighting_args": weighting_args})
    task.check_dataset(train_set, kwargs, "shapes (train)")
    config = ablation_config(
        epochs=a.epochs, batch_size=a.batch, lr=a.lr, warmup_steps=a.warmup, seed=seed,
        eval_every=a.epochs, model_name="multitask_narrow", data="shapes", model_kwargs=kwargs,
        model_args=asked, data_kwargs={"num_images": a.train_images},
    )  # fmt: skip
    seed_everything(seed)  # the initial weights: the trunk is built first, the same for every run
    model = get_model("multitask_narrow", **kwargs)
    run_dir = a.out / "runs" / f"{name}-s{seed}"
    metric = task.metric(model, train_set)
    trainer = Trainer(model, train_set, val_set, config, run_dir, metric, task=task)
    tic = time.perf_counter()
    metrics = trainer.fit()
    wall = time.perf_counter() - tic
    result = {
        "run": name,
        "seed": seed,
        "heads": list(heads),
        "weighting": weighting,
        "weighting_args": weighting_args,
        "steps": trainer.step,
        "train_s": wall,
        "params": sum(p.numel() for p in model.parameters()),
        "val": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) or _scalar(v)},
        "train_loss_per_epoch": [h["train_loss"] for h in trainer.history],
        "final_weights": _final_weights(model),
        "commit": _git()["commit"],  # the library this run trained on
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _scalar(v: Any) -> bool:
    return hasattr(v, "numel") and v.numel() == 1


def _final_weights(model: Any) -> dict[str, float]:
    """The weighting's effective per-head weights at the end of training (eval mode)."""
    import torch

    w = model.weighting
    if hasattr(w, "log_var"):
        values = 0.5 * torch.exp(-w.log_var.detach())
    elif hasattr(w, "current_weights"):
        values = w.current_weights()
    elif hasattr(w, "initial_loss"):
        values = len(w.heads) * w.weight.detach() / w.weight.detach().sum()
    else:
        values = w.weight
    return {h: float(v) for h, v in zip(w.heads, values, strict=True)}


# ---------------------------------------------------------------------------- cost


def pilot(steps: int = 5) -> dict[str, Any]:
    """Seconds per training step (batch 8, one thread, the fastest of ``steps`` after one
    warm-up step) of the unified and each single-task model at input 128 and 256 px: how the
    steps of the budget were chosen."""
    import torch

    from structpred.data.collate import collate
    from structpred.data.shapes import ShapesWorld
    from structpred.models import get_model
    from structpred.tasks import get_task

    torch.set_num_threads(1)
    data = ShapesWorld("train", num_images=8)
    images, targets = collate([data[i] for i in range(8)])
    task = get_task("multi_task")
    out: dict[str, Any] = {"batch": 8, "threads": 1, "s_per_step": {}}
    for size in (128, 256):
        for name in ("unified", *(f"single_{h}" for h in HEADS)):
            torch.manual_seed(0)
            kwargs = task.model_kwargs(data, {"heads": config_of(name)[0], "input_size": size})
            model = get_model("multitask_narrow", **kwargs).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            times = []
            for _ in range(steps + 1):
                tic = time.perf_counter()
                _, losses = model(images, targets, predict=False)
                opt.zero_grad()
                sum(losses.values()).backward()
                opt.step()
                times.append(time.perf_counter() - tic)
            out["s_per_step"][f"{name}@{size}"] = min(times[1:])
            LOG.info("pilot %s at %d px: %.3f s per step", name, size, min(times[1:]))
    return out


def timing(a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Parameters and inference time (ms per image, median of ``a.repeats`` interleaved rounds,
    2 threads) of the ``unified`` model vs its ``single_*`` models, batch 1 and 8."""
    import torch

    from structpred.data.shapes import ShapesWorld
    from structpred.engine.run import load_model

    torch.set_num_threads(2)
    names = ["unified", *(f"single_{h}" for h in HEADS)]
    models = {n: load_model(a.out / "runs" / f"{n}-s{seed}")[0].eval() for n in names}
    images = [ShapesWorld("val", num_images=8)[i][0] for i in range(8)]
    size = list(images[0].shape[1:])
    out: dict[str, Any] = {"seed": seed, "threads": 2, "repeats": a.repeats, "image_size": size}
    out["params"] = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    for batch in (1, 8):
        times: dict[str, list[float]] = {n: [] for n in names}
        with torch.no_grad():
            for round_ in range(a.repeats + 2):  # 2 warm-up rounds
                for n, m in models.items():
                    tic = time.perf_counter()
                    for i in range(0, 8, batch):
                        m(images[i : i + batch])
                    if round_ >= 2:
                        times[n].append((time.perf_counter() - tic) / 8 * 1e3)  # ms per image
        medians = {n: statistics.median(t) for n, t in times.items()}
        summed = sum(medians[f"single_{h}"] for h in HEADS)
        out[f"batch{batch}"] = {"ms_per_image": medians, "singles_sum_ms": summed,
                                "ratio": medians["unified"] / summed}  # fmt: skip
        LOG.info("batch %d: %s, ratio %.3f", batch, medians, medians["unified"] / summed)
    singles = sum(out["params"][f"single_{h}"] for h in HEADS)
    out["params_singles_sum"] = singles
    out["params_ratio"] = out["params"]["unified"] / singles
    return out


# ---------------------------------------------------------------------------- tables


def _cell(values: list[float]) -> str:
    """Mean ± half the range over seeds."""
    if not values:
        return "-"
    mean, spread = statistics.fmean(values), (max(values) - min(values)) / 2
    return f"{mean:.3f} ± {spread:.3f}" if len(values) > 1 else f"{mean:.3f}"


def _values(results: list[dict[str, Any]], run: str, key: str) -> list[float]:
    out = [float(r["val"][key]) for r in results if r["run"] == run and key in r["val"]]
    return [v for v in out if not math.isnan(v)]


def _paired(rows: list[dict[str, Any]], run: str, base: str, key: str) -> list[float]:
    """Per seed, ``run``'s figure minus ``base``'s (the seeds both have)."""
    by_seed = {r["seed"]: r["val"][key] for r in rows if r["run"] == base and key in r["val"]}
    return [r["val"][key] - by_seed[r["seed"]] for r in rows if r["run"] == run and r["seed"] in by_seed]


def _table(title: str, columns: list[str], align: str) -> list[str]:
    """A markdown table's title and header; ``align``: one of l, r, c per column."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    return [f"### {title}", "", f"| {' | '.join(columns)} |", "|" + "|".join(marks[c] for c in align) + "|"]


def _versus_table(out: dict[str, Any]) -> list[str]:
    """Per figure: single-task, unified (fixed), their paired difference, the best weighting."""
    rows, t = out["runs"], out.get("timing")
    columns = [
        "figure",
        "single-task",
        "unified",
        "unified - single (per seed)",
        "within 0.02",
        "best weighting",
    ]
    lines = _table("Unified vs single-task (val; mean ± half-range over seeds)", columns, "lrrlcl")
    for head in HEADS:
        for key, higher in FIGURES[head]:
            diffs = _paired(rows, "unified", f"single_{head}", key)
            if not diffs:
                continue
            ok = "yes" if statistics.fmean(diffs) * (1 if higher else -1) >= -TOLERANCE else "**no**"
            per = ", ".join(f"{d:+.3f}" for d in diffs)
            found = {s: _values(rows, "unified" if s == "fixed" else s, key) for s in SCHEMES}
            means = {s: statistics.fmean(v) for s, v in found.items() if v}
            best = (max if higher else min)(means, key=lambda s: means[s])
            single, unified = (
                _cell(_values(rows, f"single_{head}", key)),
                _cell(_values(rows, "unified", key)),
            )
            diff = f"{statistics.fmean(diffs):+.3f} ({per})"
            arrow = "↑" if higher else "↓"
            lines.append(
                f"| {key} ({arrow}) | {single} | {unified} | {diff} | {ok} | {best} {means[best]:.3f} |"
            )
    if t:
        lines += ["", f"Unified / sum of the four single-task models: parameters {t['params_ratio']:.2f}x, "
                  f"inference time {t['batch1']['ratio']:.2f}x at batch 1, {t['batch8']['ratio']:.2f}x at "
                  f"batch 8 ({t['threads']} threads, median of {t['repeats']} rounds)."]  # fmt: skip
    return [*lines, ""]


def _cost_table(t: dict[str, Any]) -> list[str]:
    title = f"Cost: unified vs the four single-task models (seed {t['seed']}, {t['threads']} threads)"
    columns = ["", "unified", *(f"single {h}" for h in HEADS), "sum of singles", "unified / sum"]
    lines, p = _table(title, columns, "l" + "r" * (len(columns) - 1)), t["params"]
    cells = " | ".join(f"{p[f'single_{h}'] / 1e6:.3f} M" for h in HEADS)
    sums = f"{t['params_singles_sum'] / 1e6:.3f} M | {t['params_ratio']:.2f}"
    lines.append(f"| parameters | {p['unified'] / 1e6:.3f} M | {cells} | {sums} |")
    for b in (1, 8):
        row = t[f"batch{b}"]
        ms = row["ms_per_image"]
        cells = " | ".join(f"{ms[f'single_{h}']:.1f}" for h in HEADS)
        sums = f"{row['singles_sum_ms']:.1f} | {row['ratio']:.2f}"
        lines.append(f"| inference, batch {b} (ms / image) | {ms['unified']:.1f} | {cells} | {sums} |")
    return [*lines, ""]


def _weighting_table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    columns = ["weighting", *keys, "final weights (det / sem / parts / depth)"]
    lines = _table("Loss weighting schemes (the unified model, val)", columns, "l" + "r" * len(keys) + "l")
    for scheme in SCHEMES:
        run = "unified" if scheme == "fixed" else scheme
        finals = [r["final_weights"] for r in rows if r["run"] == run]
        if finals:
            w = " / ".join(f"{statistics.fmean(f[h] for f in finals):.2f}" for h in HEADS)
            lines.append(
                f"| {scheme} | " + " | ".join(_cell(_values(rows, run, k)) for k in keys) + f" | {w} |"
            )
    return [*lines, ""]


def _ablation_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each pair run's figures against the single-task run of the same head (paired by seed)."""
    columns = ["run", "figure", "single-task", "pair", "pair - single (per seed)", "unified"]
    lines = _table("Which task helps which: two-head runs (fixed weights, val)", columns, "llrrlr")
    for run in (r for r in ABLATION if any(row["run"] == r for row in rows)):
        for head in config_of(run)[0]:
            for key, _ in FIGURES[head]:
                diffs = _paired(rows, run, f"single_{head}", key)
                per = ", ".join(f"{d:+.3f}" for d in diffs)
                mean = f"{statistics.fmean(diffs):+.3f} ({per})" if diffs else "-"
                cells = [_cell(_values(rows, r, key)) for r in (f"single_{head}", run)]
                unified = _cell(_values(rows, "unified", key))
                lines.append(f"| {run} | {key} | {' | '.join(cells)} | {mean} | {unified} |")
    return [*lines, ""]


def _pilot_table(per: dict[str, float]) -> list[str]:
    names = [n.removesuffix("@128") for n in per if n.endswith("@128")]
    lines = _table(
        "Pilot: seconds per training step (batch 8, one thread)", ["input", *names], "l" + "r" * len(names)
    )
    for size in (128, 256):
        lines.append(f"| {size} px | " + " | ".join(f"{per[f'{n}@{size}']:.3f}" for n in names) + " |")
    return [*lines, ""]


def summarize(out: dict[str, Any]) -> str:
    """The markdown tables of a ``results.json`` (mean ± half-range over seeds)."""
    rows = out["runs"]
    seeds = sorted({r["seed"] for r in rows})
    steps, commit = out["settings"]["steps"], out["git"]["commit"][:7]
    lines = [f"Seeds {seeds}; {steps} steps per run; commit {commit}.", ""]
    lines += _versus_table(out)
    if out.get("timing"):
        lines += _cost_table(out["timing"])
    keys = [k for h in HEADS for k, _ in FIGURES[h]]
    lines += _weighting_table(rows, [*keys, "score"])
    lines += _ablation_table(rows) if any(r["run"] in ABLATION for r in rows) else []
    minutes: dict[str, list[float]] = {}
    for r in rows:
        minutes.setdefault(r["run"], []).append(r["train_s"] / 60)
    walls = ", ".join(f"{k} {statistics.fmean(v):.1f}" for k, v in minutes.items())
    lines += [f"Training wall time per run (min, one thread, mean over seeds): {walls}.", ""]
    if out.get("pilot"):
        lines += _pilot_table(out["pilot"]["s_per_step"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------- driver


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent

    def run(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = [line for line in run("status", "--porcelain", "structpred").splitlines() if line]
    return {"commit": run("rev-parse", "HEAD"), "dirty_structpred": dirty}


def main(argv: list[str] | None = None) -> None:
    a = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.table:
        saved = json.loads((a.out / "results.json").read_text())
        if "pilot" not in saved and (a.out / "pilot.json").exists():  # a --pilot run after the sweep
            saved["pilot"] = json.loads((a.out / "pilot.json").read_text())
            (a.out / "results.json").write_text(json.dumps(saved, indent=1, default=str))
        (a.out / "results.md").write_text(summarize(saved))
        print((a.out / "results.md").read_text())
        return
    if a.pilot:
        (a.out / "pilot.json").write_text(json.dumps(pilot(), indent=1))
        return
    if a.one:
        name, seed = a.one[0], int(a.one[1])
        result = train_one(a, name, seed)
        LOG.info("%s seed %d: %.1f min, %s", name, seed, result["train_s"] / 60, result["val"])
        return
    asked = [c for c in a.configs.split(",") if c]
    names = asked + (ABLATION if a.ablation else [])
    for n in names:
        config_of(n)
    # every seed of the asked runs, then the ablation's: an interrupted sweep has whole comparisons
    jobs = [(n, s) for s in a.seeds for n in asked]
    jobs += [(n, s) for s in (a.ablation_seeds or a.seeds) for n in names[len(asked) :]]
    git = _git()
    tic = time.perf_counter()
    recipe = ("input_size", "train_images", "val_images", "epochs", "batch", "lr", "warmup", "gradnorm_alpha")
    passed = [f"--{k.replace('_', '-')}={getattr(a, k)}" for k in recipe]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    for name, seed in jobs:
        if (a.out / "runs" / f"{name}-s{seed}" / "result.json").exists():
            continue  # done by an earlier (interrupted) sweep with the same settings
        while sum(p.poll() is None for p, _ in procs) >= a.jobs:
            time.sleep(2)
        log_file = open(a.out / f"{name}-s{seed}.log", "w")  # noqa: SIM115 (closed below)
        cmd = [sys.executable, __file__, "--out", str(a.out), *passed, "--one", name, str(seed)]
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        procs.append((proc, log_file))
    failed = [p.args for p, _ in procs if p.wait() != 0]
    for _, f in procs:
        f.close()
    if failed:
        raise SystemExit(f"failed: {failed}; see the logs under {a.out}")
    done = [a.out / "runs" / f"{n}-s{s}" / "result.json" for n, s in jobs]
    runs = [json.loads(path.read_text()) for path in done]
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "one", "table")}
    settings["steps"] = a.epochs * (a.train_images // a.batch)
    settings["recipe"] = "AdamW, weight decay 1e-4 (none on the weighting's), linear warm-up, cosine to 0"
    out: dict[str, Any] = {"settings": settings, "git": git, "runs": runs}
    if (a.out / "pilot.json").exists():  # written by --pilot before the sweep
        out["pilot"] = json.loads((a.out / "pilot.json").read_text())
    if not a.skip_timing and all(f"single_{h}" in names for h in HEADS) and "unified" in names:
        out["timing"] = timing(a, a.seeds[0])
    out["total_s"] = time.perf_counter() - tic
    (a.out / "results.json").write_text(json.dumps(out, indent=1, default=str))
    (a.out / "results.md").write_text(summarize(out))
    print((a.out / "results.md").read_text())
    LOG.info("done in %.1f min", out["total_s"] / 60)


if __name__ == "__main__":
    main()
