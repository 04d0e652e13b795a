"""Multi-task benchmark: the unified network against its four single-task models run one after another.

``structpred bench multitask``, issue 21's speed part. Eval
mode, ``torch.no_grad()``, the ShapesWorld test images (128 x 128) as one ``[B, 3, 128, 128]``
batch, which every model resizes to its ``input_size``; a call is the whole inference (normalise,
resize, network, shared dense decoder, FCOS decoding + NMS, dense maps back to 128 x 128).

Weights: random (seed 0) by default; ``--checkpoint RUN`` times a trained multi-task checkpoint
(its builder and settings, at its own input size and at 256 px) instead. The output's first line
says which, and the ratio table gives the detections kept per image (NMS's load): the
post-processing then costs what it costs in use. (The experiment's trained narrow model still
keeps 100 per image at its 0.05 threshold.)

Models (:mod:`structpred.models.multitask`): the unified model with the four heads (detection,
semantic, parts, depth) and the four single-head models ``heads=(h,)`` of the same builder, each
given the unified model's weights for its backbone + FPN and its head, so every single model
computes exactly the unified model's prediction for its head (checked before timing).

Rows per case:

- ratio: the unified call and the four single-head models called one after another (the peer),
  timed alternately in one run (:func:`~structpred.bench.timing.compare`), medians; the goal is
  unified / singles <= 0.5. The same run gives each single model's median (timed inside the
  sequence).
- breakdown: the unified model's parts, timed round-robin: the trunk (transform + backbone +
  FPN P2..P7, the shared dense decoder) and each head on the trunk's cached features
  (:class:`SharedFeatures`).
- throughput: GFLOP of one unified call and of the four singles, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (:func:`~structpred.bench.detection.count_gflop`),
  divided by the median time, against this machine's float32 matmul peak measured in the same
  run (:func:`~structpred.bench.detection.matmul_peak`, 2048 x 2048 ``torch.mm``, same threads).
- parameters: the unified model against the sum of the four single-head models'.

Cases: ``multitask_narrow`` at 256 px input, batch 8 (the training setting), and the extremes
batch 1, 64 px and 512 px input; ``multitask_fpn`` (resnet18 + 128-channel FPN) at 256 px, batch 8.
``--quick``: tiny cases, 1 repeat (a smoke run, not figures).

With random weights the narrow detection head passes its score threshold (0.05) at many
locations and keeps its 100 detections per image; the resnet18 one keeps none. NMS's share of
the detection head differs accordingly.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..models.multitask import HEAD_KINDS, MultiTaskNet
from ..models.multitask_heads import SharedFeatures
from ..models.registry import get_model
from .detection import count_gflop, matmul_peak
from .timing import Comparison, compare, suite_parser, suite_repeats

SEED = 0
TARGET = 0.5  # unified / sum of the single-task models' inference time, at most
ATOL = 1e-4  # unified vs single-head predictions


@dataclass(frozen=True)
class Case:
    """One measured setting: a registered multi-task builder (or a trained checkpoint of one), its
    input size, the batch."""

    model: str
    input_size: int
    batch: int
    image_size: int = 128  # px, the ShapesWorld images fed (the model resizes to input_size)
    checkpoint: str | None = None  # a trained run (its weights and settings) instead of random weights

    @property
    def name(self) -> str:
        trained = " (trained)" if self.checkpoint else ""
        return f"{self.model}{trained}, {self.input_size} px input, batch {self.batch}"


CASES = (
    Case("multitask_narrow", 256, 8),
    Case("multitask_narrow", 256, 1),
    Case("multitask_narrow", 64, 8),
    Case("multitask_narrow", 512, 8),
    Case("multitask_fpn", 256, 8),
)
QUICK_CASES = (Case("multitask_narrow", 64, 2, 32), Case("multitask_fpn", 64, 1, 32))


@dataclass
class Result:
    """One case's figures (times in ms, medians)."""

    case: Case
    comparison: Comparison  # unified vs the singles in sequence
    single_ms: dict[str, float]  # each single-head model, timed inside the sequence
    trunk_ms: float  # transform + backbone + FPN of the unified model
    head_ms: dict[str, float]  # each head of the unified model on the cached trunk features
    gflop_unified: float
    gflop_singles: float
    params_unified: int
    params_singles: int
    peak_gflops: float
    detections_per_image: float  # what the detection head keeps (NMS's load); 0 without one

    @property
    def gflops_unified(self) -> float:
        return self.gflop_unified / self.comparison.ours_ms * 1e3

    @property
    def gflops_singles(self) -> float:
        return self.gflop_singles / self.comparison.peer_ms * 1e3


def shapes_batch(batch: int, size: int) -> Tensor:
    """``[B, 3, size, size]`` in [0, 1]: the first ``batch`` ShapesWorld test images."""
    from ..data import ShapesWorld

    world = ShapesWorld("test", size=size, num_images=batch)
    return torch.stack([world[i][0] for i in range(batch)])  # B x (3, S, S) -> (B, 3, S, S)


def _build(case: Case, **config: Any) -> MultiTaskNet:
    model = get_model(case.model, input_size=case.input_size, **config)
    if not isinstance(model, MultiTaskNet):
        raise ValueError(f"{case.model} is not a multi-task model ({type(model).__name__})")
    return model.eval()


def _unified(case: Case) -> tuple[MultiTaskNet, dict[str, Any]]:
    """The unified model (random seed-0 or the checkpoint's weights) and the settings to build
    its single-head models with."""
    if case.checkpoint is None:
        torch.manual_seed(SEED)
        return _build(case), {}
    from ..engine.run import load_model

    model, config = load_model(case.checkpoint, image_size=case.input_size)
    if not isinstance(model, MultiTaskNet):
        raise ValueError(f"{case.checkpoint}: a {type(model).__name__}, not a multi-task model")
    # the singles: the same settings, one head, fixed weights (the weighting has no say at inference)
    kwargs = {**config.model_kwargs, "weighting": "fixed", "weighting_args": {}}
    kwargs.pop("input_size", None)
    return model.eval(), kwargs


def checkpoint_cases(checkpoint: str) -> tuple[Case, ...]:
    """The cases of a trained checkpoint: its own input size at batch 8 and 1, and 256 px at batch 8."""
    from ..engine.run import load_model

    model, config = load_model(checkpoint)
    if not isinstance(model, MultiTaskNet):
        raise ValueError(f"{checkpoint}: a {type(model).__name__}, not a multi-task model")
    size = int(config.model_kwargs.get("input_size", model.transform.min_size[0]))
    sizes = [(size, 8), (size, 1)] + ([(256, 8)] if size != 256 else [])
    return tuple(Case(config.model_name, s, b, checkpoint=str(checkpoint)) for s, b in sizes)


def build_models(case: Case) -> tuple[MultiTaskNet, dict[str, MultiTaskNet]]:
    """The unified model (eval: seed 0, or the case's checkpoint) and the single-head ones
    carrying its weights."""
    unified, settings = _unified(case)
    state = unified.state_dict()
    singles = {}
    for head in unified.heads:
        single = _build(case, **{**settings, "heads": (head,)})
        keys = single.state_dict().keys()
        if not keys <= state.keys():
            raise RuntimeError(f"{case.model} heads=({head!r},) has weights the unified model lacks")
        single.load_state_dict({k: state[k] for k in keys}, strict=True)
        singles[head] = single
    return unified, singles


def trunk(model: MultiTaskNet, images: Tensor) -> SharedFeatures:
    """The shared part of :meth:`MultiTaskNet.forward` (transform, backbone + FPN, the shared dense
    decoder) on one batch."""
    return model.features(images)


def max_difference(a: Any, b: Any, where: str = "") -> float:
    """Largest absolute difference between two nested predictions (dicts, lists, tensors);
    ``RuntimeError`` when their structure or shapes differ."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            raise RuntimeError(f"{where}: shapes {tuple(a.shape)} vs {tuple(b.shape)}")
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((max_difference(a[k], b[k], f"{where}.{k}") for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return max((max_difference(x, y, f"{where}[{i}]") for i, (x, y) in pairs), default=0.0)
    raise RuntimeError(f"{where}: {type(a).__name__} vs {type(b).__name__} of another structure")


def _call(model: nn.Module, images: Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with torch.no_grad():
            return model(images)[0]

    return call


def _round_robin(calls: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """Median ms of each call, the calls timed in turn, the order rotating every repeat."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(case: Case, repeats: int, warmup: int, peak: float) -> Result:
    """Every figure of one case (see the module docstring)."""
    images = shapes_batch(case.batch, case.image_size)
    unified, singles = build_models(case)
    unified_call = _call(unified, images)
    single_calls = {head: _call(model, images) for head, model in singles.items()}

    with torch.no_grad():  # like for like: each single predicts what the unified model does
        features = trunk(unified, images)
        predictions = unified_call()
        for head, call in single_calls.items():
            diff = max_difference(predictions[head], call()[head], head)
            if diff > ATOL:
                raise RuntimeError(f"{case.name}: the {head}-only model differs from the unified by {diff:g}")
            on_features = unified.heads[head](features, None, True)[0]
            if max_difference(predictions[head], on_features, head) > ATOL:
                raise RuntimeError(f"{case.name}: the {head} head on the trunk's features differs")

    single_times: dict[str, list[float]] = {head: [] for head in singles}

    def in_sequence() -> None:  # the peer: the single-task models one after another
        for head, call in single_calls.items():
            start = time.perf_counter()
            call()
            single_times[head].append((time.perf_counter() - start) * 1e3)

    comparison = compare(case.name, unified_call, in_sequence, repeats=repeats, warmup=warmup, target=TARGET)
    single_ms = {head: statistics.median(t[warmup:]) for head, t in single_times.items()}

    def run_trunk() -> None:
        with torch.no_grad():
            trunk(unified, images)

    def head_call(head: str) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad():
                return unified.heads[head](features, None, True)[0]

        return call

    parts = _round_robin(
        {"trunk": run_trunk, **{head: head_call(head) for head in unified.heads}}, repeats, warmup
    )
    kept = [len(d["boxes"]) for d in predictions.get("detection", [])]
    return Result(
        case,
        comparison,
        single_ms,
        parts.pop("trunk"),
        parts,
        count_gflop(unified_call),
        count_gflop(in_sequence),
        sum(p.numel() for p in unified.parameters()),
        sum(p.numel() for m in singles.values() for p in m.parameters()),
        peak,
        statistics.fmean(kept) if kept else 0.0,
    )


def format_results(results: list[Result]) -> str:
    """The four Markdown tables: ratio, breakdown, throughput, parameters."""
    heads = [h for h in HEAD_KINDS if any(h in r.head_ms for r in results)]
    ratio = [
        "| case | unified (ms) | single-task models in sequence (ms) | unified / singles | target | "
        "detections / image |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        c = r.comparison
        ratio.append(
            f"| {c.name} | {c.ours_ms:.1f} | {c.peer_ms:.1f} | **{c.ratio:.2f}** | "
            f"<= {TARGET:g} {c.verdict} | {r.detections_per_image:.1f} |"
        )
    parts = [
        "| case | trunk | " + " | ".join(f"{h} head" for h in heads) + " | trunk + heads | unified | "
        + " | ".join(f"{h}-only model" for h in heads) + " | sum of singles |",
        "|---|" + "---:|" * (2 * len(heads) + 4),
    ]  # fmt: skip
    for r in results:
        cells = [r.trunk_ms, *(r.head_ms.get(h) for h in heads), r.trunk_ms + sum(r.head_ms.values())]
        cells += [r.comparison.ours_ms, *(r.single_ms.get(h) for h in heads), sum(r.single_ms.values())]
        text = ["-" if v is None else f"{v:.1f}" for v in cells]
        parts.append(f"| {r.case.name} | " + " | ".join(text) + " |")
    throughput = [
        "| case | unified GFLOP | unified GFLOP/s | % of matmul peak | singles GFLOP | singles GFLOP/s | "
        "% of matmul peak | GFLOP unified / singles |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        throughput.append(
            f"| {r.case.name} | {r.gflop_unified:.3f} | {r.gflops_unified:.1f} | "
            f"{100 * r.gflops_unified / r.peak_gflops:.1f} | {r.gflop_singles:.3f} | "
            f"{r.gflops_singles:.1f} | "
            f"{100 * r.gflops_singles / r.peak_gflops:.1f} | {r.gflop_unified / r.gflop_singles:.2f} |"
        )
    params = [
        "| model | unified parameters | sum of the single-task models | unified / singles |",
        "|---|---:|---:|---:|",
    ]
    seen = set()
    for r in results:
        if r.case.model not in seen:  # the input size and batch do not change the weights
            seen.add(r.case.model)
            params.append(
                f"| {r.case.model} | {r.params_unified:,} | {r.params_singles:,} | "
                f"{r.params_unified / r.params_singles:.2f} |"
            )
    return "\n\n".join("\n".join(t) for t in (ratio, parts, throughput, params))


def run(
    repeats: int = 7, threads: int = 2, quick: bool = False, checkpoint: str | None = None
) -> tuple[list[Result], float]:
    """Every case's figures and the matmul peak (GFLOP/s) of the same run (``checkpoint``: the
    trained run's cases, :func:`checkpoint_cases`)."""
    torch.set_num_threads(threads)
    warmup = 0 if quick else 1
    peak = matmul_peak(512, 3) if quick else matmul_peak(2048, 10)
    cases = checkpoint_cases(checkpoint) if checkpoint else QUICK_CASES if quick else CASES
    if checkpoint and quick:
        cases = tuple(replace(c, batch=min(c.batch, 2)) for c in cases[:1])
    return [measure(case, repeats, warmup, peak) for case in cases], peak


def _load() -> str:
    """The 1, 5, 15 min load averages (the machine may be shared: printed beside the figures)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown tables."""
    parser = suite_parser("multitask", __doc__, 7)
    parser.add_argument(
        "--checkpoint", help="a trained multi-task run (or checkpoint file) to time instead of random weights"
    )
    args = parser.parse_args(argv)
    repeats = suite_repeats(parser, args)
    previous_threads = torch.get_num_threads()
    load_before = _load()
    try:
        results, peak = run(repeats, args.threads, args.quick, args.checkpoint)
    finally:  # the caller (a test, a notebook) gets its own thread count back
        torch.set_num_threads(previous_threads)
    weights = f"trained checkpoint {args.checkpoint}" if args.checkpoint else f"random (seed {SEED})"
    header = (
        f"weights: {weights}; load average before / after: {load_before} / {_load()}\n"
        f"torch {torch.__version__}, {args.threads} threads, median of {repeats} runs (unified and the "
        f"singles in sequence alternating; the breakdown round-robin), matmul peak {peak:.1f} GFLOP/s"
    )
    if args.quick:
        header += " (QUICK: tiny cases, not the sizes of the full run; a smoke run, not figures)"
    text = header + "\n\n" + format_results(results)
    print(text)
    return text


if __name__ == "__main__":
    main()
