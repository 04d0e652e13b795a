"""Issue 21 trained for real: the unified multi-task network vs its single-task networks, its
cost, the minus-one-head ablation and the four loss weightings, on the shapes world, 3 seeds.

Command (``--pilot``: step times at 128 / 256 px; then every run trained by the engine on one
thread, ``--jobs`` runs at a time, a run whose ``result.json`` exists is kept; then the inference
timing of the trained seed-0 checkpoints on 2 threads, ``results.json`` and ``results.md`` under
``--out``; ``--compare``: an earlier sweep's ``results.json`` as comparison rows)::

    OMP_NUM_THREADS=1 python experiments/multitask.py --out /tmp/mt_exp/shared --pilot
    OMP_NUM_THREADS=1 python experiments/multitask.py --out /tmp/mt_exp/shared --seeds 0 1 2 \
        --scheme-seeds 0 --ablation --ablation-seeds 0 1 --jobs 2
    python experiments/multitask.py --out /tmp/mt_exp/shared --table --compare OLD/results.json

Runs (:mod:`multitask_report`), all ``multitask_narrow`` (the narrow backbone + FPN P2..P7 + the
dense decoder ``--dense-decoder``, the same initialisation of the shared trunk for a seed), one
recipe:

* ``unified``: the four heads (detection, semantic, parts, depth), fixed weights 1 (``--seeds``);
* ``single_<head>``: that head alone (``heads=("<head>",)``): the baselines (``--seeds``);
* ``uncertainty``, ``dwa``, ``gradnorm``: the four heads under that weighting (DWA's window =
  one epoch's steps, temperature 2; GradNorm alpha 1.5 on the FPN's output convolutions)
  (``--scheme-seeds``);
* ``minus_<head>`` (``--ablation``, ``--ablation-seeds``): the unified model without that head.

Recipe: ShapesWorld train (``--train-images``, 128 px, rendered once and cached) for ``--epochs``
epochs of batch ``--batch`` (the same steps for every run; the data order depends on the seed
only), AdamW lr ``--lr``, ``--warmup`` steps of linear warm-up then cosine, the engine's other
defaults (weight decay 1e-4, none on the weighting's parameters). Each run is scored once, at
its end, on ShapesWorld val (``--val-images``) by the ``multi_task`` task's metric: detection
COCO ``map`` / ``map_50``, semantic and parts ``miou``, depth ``abs_rel`` / ``a1`` (metric depth
through the camera), and ``score`` (the mean of the heads' headlines, AbsRel as 1 - AbsRel).

Cost: parameters, and inference time (eval, ``no_grad``, 2 threads, after every run is done) of
the trained seed-0 ``unified`` model vs its trained ``single_*`` models run one after another on
the same val images: batch 1 and batch 8, the models interleaved in each of ``--repeats``
rounds, median.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from multitask_report import ABLATION, HEADS, MAIN, WEIGHTINGS, config_of, summarize

LOG = logging.getLogger("multitask")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/mt_exp/main"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", default=",".join(MAIN), help="comma list of runs (over --seeds)")
    p.add_argument("--scheme-seeds", type=int, nargs="*", default=[0], help="the weighting runs' seeds")
    p.add_argument("--ablation", action="store_true", help="also the minus_<head> runs")
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=[0], help="their seeds")
    p.add_argument("--dense-decoder", default="shared", choices=("shared", "per_head"))
    p.add_argument("--dense-head-convs", type=int, default=0, help="3x3 stages per dense predictor")
    p.add_argument("--single-head-convs", type=int, help="the single-task runs' (default: the same)")
    p.add_argument("--dense-own", default="", help="comma list: dense heads with their own branch (shared)")
    p.add_argument("--compare", type=Path, help="an earlier sweep's results.json: comparison rows")
    p.add_argument("--reuse", type=Path, help="an earlier sweep's --out: reuse its single_* runs")
    p.add_argument("--reuse-seeds", type=int, nargs="*", default=[0, 1], help="the seeds reused")
    p.add_argument("--reuse-runs", default=",".join(f"single_{h}" for h in HEADS), help="comma list")
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
    p.add_argument("--timing-only", action="store_true", help="only time the trained seed-0 runs")
    p.add_argument("--timing-run", default="unified", help="the four-head run timed (e.g. uncertainty)")
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
    convs = a.dense_head_convs
    if name.startswith("single_") and a.single_head_convs is not None:
        convs = a.single_head_convs
    asked = {"heads": list(heads), "input_size": a.input_size, "weighting": weighting,
             "dense_decoder": a.dense_decoder, "dense_head_convs": convs,
             "dense_own": [h for h in a.dense_own.split(",") if h]}  # fmt: skip
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
        "dense_decoder": a.dense_decoder,
        "dense_head_convs": convs,
        "dense_own": asked["dense_own"],
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
    2 threads) of the trained ``unified`` model vs its ``single_*`` models, batch 1 and 8. A single
    is its own trained checkpoint if its run has one, else the unified checkpoint's trunk (+ decoder)
    and head (:func:`structpred.bench.multitask.build_models`: it predicts what the unified does)."""
    import torch

    from structpred.bench.multitask import Case, build_models
    from structpred.data.shapes import ShapesWorld
    from structpred.engine.checkpoint import resolve_checkpoint
    from structpred.engine.run import load_model

    torch.set_num_threads(2)
    before = _uptime()
    names = ["unified", *(f"single_{h}" for h in HEADS)]
    run = a.out / "runs" / f"{a.timing_run}-s{seed}"
    unified, from_unified = build_models(Case("multitask_narrow", a.input_size, 8, checkpoint=str(run)))
    models: dict[str, Any] = {"unified": unified}
    source: dict[str, str] = {}
    for h in HEADS:
        own = a.out / "runs" / f"single_{h}-s{seed}"
        try:
            resolve_checkpoint(own, False)
            models[f"single_{h}"], source[h] = load_model(own)[0].eval(), "its own trained checkpoint"
        except ValueError:
            models[f"single_{h}"], source[h] = from_unified[h], "the unified checkpoint's trunk and head"
    images = [ShapesWorld("val", num_images=8)[i][0] for i in range(8)]
    size = list(images[0].shape[1:])
    out: dict[str, Any] = {"seed": seed, "threads": 2, "repeats": a.repeats, "image_size": size}
    out["unified_run"] = str(run)
    out["singles_weights"] = source
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
    out["uptime"] = [before, _uptime()]
    return out


def _uptime() -> str:
    """``uptime``'s load averages (the machine is shared: beside every timing)."""
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return done.stdout.strip().split("load average:")[-1].strip()


# ---------------------------------------------------------------------------- driver


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent

    def run(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = [line for line in run("status", "--porcelain", "structpred").splitlines() if line]
    return {"commit": run("rev-parse", "HEAD"), "dirty_structpred": dirty}


def collect(out: Path) -> list[dict[str, Any]]:
    """Every finished run under ``out/runs`` (this sweep's and earlier drivers' into the same
    ``--out``, and reused ones: see :func:`reuse`)."""
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]


def reuse(a: argparse.Namespace, old: Path, names: list[str], seeds: list[int]) -> None:
    """Copy the ``result.json`` of runs ``names`` x ``seeds`` of an earlier sweep under ``old``
    (``old/runs/<name>-s<seed>``) into this one, marked ``reused_from``: for runs whose network
    and recipe are unchanged (checked bit for bit: the single-task models, see RESULTS)."""
    for name in names:
        for seed in seeds:
            src = old / "runs" / f"{name}-s{seed}" / "result.json"
            dst = a.out / "runs" / f"{name}-s{seed}" / "result.json"
            if dst.exists() or not src.exists():
                continue
            result = json.loads(src.read_text())
            result["reused_from"] = str(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(json.dumps(result, indent=1))
            LOG.info("reused %s", src)


def _compare(a: argparse.Namespace) -> dict[str, Any] | None:
    return json.loads(a.compare.read_text()) if a.compare else None


def main(argv: list[str] | None = None) -> None:
    a = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.reuse:
        reuse(a, a.reuse, [n for n in a.reuse_runs.split(",") if n], a.reuse_seeds)
    if a.table:
        saved = json.loads((a.out / "results.json").read_text())
        saved["runs"] = collect(a.out)
        if (a.out / "timing.json").exists():
            saved["timing"] = json.loads((a.out / "timing.json").read_text())
        if "pilot" not in saved and (a.out / "pilot.json").exists():  # a --pilot run after the sweep
            saved["pilot"] = json.loads((a.out / "pilot.json").read_text())
            (a.out / "results.json").write_text(json.dumps(saved, indent=1, default=str))
        (a.out / "results.md").write_text(summarize(saved, _compare(a)))
        print((a.out / "results.md").read_text())
        return
    if a.timing_only:
        (a.out / "timing.json").write_text(json.dumps(timing(a, 0), indent=1))
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
    for n in asked:
        config_of(n)
    # every seed of the asked runs (unified first: the longest), then the weightings and the
    # ablation, seed by seed: an interrupted sweep has whole comparisons
    jobs = [(n, s) for n in asked[:1] for s in a.seeds] + [(n, s) for s in a.seeds for n in asked[1:]]
    later = sorted({*a.scheme_seeds, *(a.ablation_seeds if a.ablation else [])})
    for s in later:
        jobs += [(n, s) for n in ABLATION if a.ablation and s in a.ablation_seeds]
        jobs += [(n, s) for n in WEIGHTINGS if s in a.scheme_seeds]
    git = _git()
    tic = time.perf_counter()
    recipe = ("input_size", "train_images", "val_images", "epochs", "batch", "lr", "warmup", "gradnorm_alpha",
              "dense_decoder", "dense_head_convs", "single_head_convs", "dense_own")  # fmt: skip
    passed = [f"--{k.replace('_', '-')}={getattr(a, k)}" for k in recipe if getattr(a, k) is not None]
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
    runs = collect(a.out)
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "one", "table")}
    settings["steps"] = a.epochs * (a.train_images // a.batch)
    settings["recipe"] = "AdamW, weight decay 1e-4 (none on the weighting's), linear warm-up, cosine to 0"
    out: dict[str, Any] = {"settings": settings, "git": git, "runs": runs}
    if (a.out / "pilot.json").exists():  # written by --pilot before the sweep
        out["pilot"] = json.loads((a.out / "pilot.json").read_text())
    if (a.out / "timing.json").exists():  # written by --timing-only
        out["timing"] = json.loads((a.out / "timing.json").read_text())
    elif not a.skip_timing and all(f"single_{h}" in asked for h in HEADS) and "unified" in asked:
        out["timing"] = timing(a, 0)
    out["total_s"] = time.perf_counter() - tic
    (a.out / "results.json").write_text(json.dumps(out, indent=1, default=str))
    (a.out / "results.md").write_text(summarize(out, _compare(a)))
    print((a.out / "results.md").read_text())
    LOG.info("done in %.1f min", out["total_s"] / 60)


if __name__ == "__main__":
    main()
