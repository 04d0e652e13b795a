"""The tables of experiments/multitask.py (issue 21) from its ``results.json``: the run names, the
figures per head, and Markdown tables (mean ± half-range over seeds, per-seed paired differences).

Runs: ``unified`` (the four heads, fixed weights 1), ``single_<head>``, ``uncertainty`` / ``dwa`` /
``gradnorm`` (the four heads under that weighting), ``minus_<head>`` (the unified model without
that head: what the head gives the others). ``--compare DIR`` adds an earlier sweep's runs (e.g.
the per-head dense branches) as labelled comparison rows.
"""

from __future__ import annotations

import math
import statistics
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
MAIN = ["unified", *(f"single_{h}" for h in HEADS)]
WEIGHTINGS = list(SCHEMES[1:])
ABLATION = [f"minus_{h}" for h in HEADS]  # the unified model without one head
TOLERANCE = 0.02  # the "within 2 points"


def config_of(name: str) -> tuple[tuple[str, ...], str]:
    """``(heads, weighting)`` of a run name (``ValueError`` for an unknown name)."""
    if name == "unified":
        return HEADS, "fixed"
    if name in WEIGHTINGS:
        return HEADS, name
    kind, _, head = name.partition("_")
    if head in HEADS and kind == "single":
        return (head,), "fixed"
    if head in HEADS and kind == "minus":
        return tuple(h for h in HEADS if h != head), "fixed"
    raise ValueError(f"unknown run {name!r}; runs are {', '.join(MAIN + WEIGHTINGS + ABLATION)}")


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
    """Per seed, ``run``'s figure minus ``base``'s (the seeds both have), in seed order."""
    by_seed = {r["seed"]: r["val"][key] for r in rows if r["run"] == base and key in r["val"]}
    mine = sorted((r["seed"], r["val"][key]) for r in rows if r["run"] == run and r["seed"] in by_seed)
    return [v - by_seed[s] for s, v in mine]


def _seeds(rows: list[dict[str, Any]], run: str) -> list[int]:
    return sorted({r["seed"] for r in rows if r["run"] == run})


def _table(title: str, columns: list[str], align: str) -> list[str]:
    """A markdown table's title and header; ``align``: one of l, r, c per column."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    return [f"### {title}", "", f"| {' | '.join(columns)} |", "|" + "|".join(marks[c] for c in align) + "|"]


def versus_table(rows: list[dict[str, Any]], compare: list[dict[str, Any]] | None = None) -> list[str]:
    """Per figure: single-task, unified (fixed), their paired difference (per seed), within the
    tolerance, the best weighting; ``compare`` (an earlier sweep) as a labelled row per figure."""
    columns = ["figure", "single-task", "unified", "unified - single (per seed)", "within 0.02",
               "best weighting"]  # fmt: skip
    seeds = _seeds(rows, "unified")
    lines = _table(f"Unified vs single-task (val; mean ± half-range over seeds {seeds})", columns, "lrrlcl")
    for head in HEADS:
        for key, higher in FIGURES[head]:
            diffs = _paired(rows, "unified", f"single_{head}", key)
            if not diffs:
                continue
            sign = 1 if higher else -1
            ok = "yes" if statistics.fmean(diffs) * sign >= -TOLERANCE else "**no**"
            worst = min(d * sign for d in diffs)
            ok += "" if worst >= -TOLERANCE else f" (not every seed: worst {worst * sign:+.3f})"
            per = ", ".join(f"{d:+.3f}" for d in diffs)
            found = {s: _values(rows, "unified" if s == "fixed" else s, key) for s in SCHEMES}
            means = {s: statistics.fmean(v) for s, v in found.items() if v}
            best = (max if higher else min)(means, key=lambda s: means[s])
            single, unified = (
                _cell(_values(rows, f"single_{head}", key)),
                _cell(_values(rows, "unified", key)),
            )
            arrow = "↑" if higher else "↓"
            diff = f"{statistics.fmean(diffs):+.3f} ({per})"
            best_cell = f"{best} {means[best]:.3f}"
            lines.append(f"| {key} ({arrow}) | {single} | {unified} | {diff} | {ok} | {best_cell} |")
            if compare:
                old = _paired(compare, "unified", f"single_{head}", key)
                if old:
                    o_single = _cell(_values(compare, f"single_{head}", key))
                    o_unified = _cell(_values(compare, "unified", key))
                    o_per = ", ".join(f"{d:+.3f}" for d in old)
                    label = f"*per_head (earlier sweep, seeds {_seeds(compare, 'unified')})*"
                    o_diff = f"{statistics.fmean(old):+.3f} ({o_per})"
                    lines.append(f"| {label} | {o_single} | {o_unified} | {o_diff} | | |")
    return [*lines, ""]


def cost_table(t: dict[str, Any], compare: dict[str, Any] | None = None) -> list[str]:
    """Parameters and inference time of the unified model vs its single-task models."""
    title = (f"Cost: unified vs the four single-task models (trained seed-{t['seed']} checkpoints, "
             f"{t['threads']} threads)")  # fmt: skip
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
    if t.get("uptime"):
        lines += ["", f"Load (`uptime`) before / after the timing: {t['uptime'][0]} / {t['uptime'][1]}."]
    if compare:
        b1, b8 = compare["batch1"]["ratio"], compare["batch8"]["ratio"]
        lines += ["", f"Earlier sweep (per_head): parameters {compare['params_ratio']:.2f}, inference "
                  f"{b1:.2f} / {b8:.2f} at batch 1 / 8."]  # fmt: skip
    return [*lines, ""]


def weighting_table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    columns = ["weighting", *keys, "final weights (det / sem / parts / depth)"]
    lines = _table("Loss weighting schemes (the unified model, val)", columns, "l" + "r" * len(keys) + "l")
    for scheme in SCHEMES:
        run = "unified" if scheme == "fixed" else scheme
        finals = [r["final_weights"] for r in rows if r["run"] == run]
        if finals:
            w = " / ".join(f"{statistics.fmean(f[h] for f in finals):.2f}" for h in HEADS)
            seeds = _seeds(rows, run)
            cells = " | ".join(_cell(_values(rows, run, k)) for k in keys)
            lines.append(f"| {scheme} (seeds {seeds}) | {cells} | {w} |")
    return [*lines, ""]


def ablation_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each minus-one run's figures against the unified run (paired by seed): what the dropped
    head gives the others (unified - minus > 0 on a ↑ figure: the head helped)."""
    columns = ["dropped head", "figure", "single-task", "unified without it", "unified",
               "unified - without (per seed)"]  # fmt: skip
    lines = _table("Minus-one-head ablation (fixed weights, val)", columns, "llrrrl")
    for run in (r for r in ABLATION if any(row["run"] == r for row in rows)):
        for head in config_of(run)[0]:
            for key, higher in FIGURES[head]:
                diffs = [-d for d in _paired(rows, run, "unified", key)]
                per = ", ".join(f"{d:+.3f}" for d in diffs)
                mean = f"{statistics.fmean(diffs):+.3f} ({per})" if diffs else "-"
                seeds = _seeds(rows, run)
                unified = [v for r in rows if r["run"] == "unified" and r["seed"] in seeds and key in r["val"]
                           for v in [float(r["val"][key])]]  # fmt: skip
                cells = [
                    _cell(_values(rows, f"single_{head}", key)),
                    _cell(_values(rows, run, key)),
                    _cell(unified),
                ]
                arrow = "↑" if higher else "↓"
                lines.append(f"| {run.removeprefix('minus_')} (seeds {seeds}) | {key} ({arrow}) | "
                             f"{' | '.join(cells)} | {mean} |")  # fmt: skip
    return [*lines, ""]


def pilot_table(per: dict[str, float]) -> list[str]:
    names = [n.removesuffix("@128") for n in per if n.endswith("@128")]
    lines = _table(
        "Pilot: seconds per training step (batch 8, one thread)", ["input", *names], "l" + "r" * len(names)
    )
    for size in (128, 256):
        lines.append(f"| {size} px | " + " | ".join(f"{per[f'{n}@{size}']:.3f}" for n in names) + " |")
    return [*lines, ""]


def summarize(out: dict[str, Any], compare: dict[str, Any] | None = None) -> str:
    """The markdown tables of a ``results.json`` (``compare``: an earlier sweep's ``results.json``)."""
    rows = out["runs"]
    old = compare["runs"] if compare else None
    steps, commit = out["settings"]["steps"], out["git"]["commit"][:7]
    decoder = out["settings"].get("dense_decoder", "per_head")
    lines = [f"Dense decoder {decoder}; {steps} steps per run; commit {commit}.", ""]
    lines += versus_table(rows, old)
    if out.get("timing"):
        lines += cost_table(out["timing"], compare.get("timing") if compare else None)
    keys = [k for h in HEADS for k, _ in FIGURES[h]]
    lines += weighting_table(rows, [*keys, "score"])
    lines += ablation_table(rows) if any(r["run"] in ABLATION for r in rows) else []
    minutes: dict[str, list[float]] = {}
    for r in rows:
        minutes.setdefault(r["run"], []).append(r["train_s"] / 60)
    walls = ", ".join(f"{k} {statistics.fmean(v):.1f}" for k, v in minutes.items())
    lines += [f"Training wall time per run (min, one thread, mean over seeds): {walls}.", ""]
    if out.get("pilot"):
        lines += pilot_table(out["pilot"]["s_per_step"])
    return "\n".join(lines)
