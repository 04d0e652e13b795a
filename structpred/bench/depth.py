"""Depth benchmark: the stereo network and the monocular network, images per second, GFLOP/s against
the matmul peak, OpenCV's StereoSGBM on the same pair beside them; the cost-volume ops.

Models (random weights, seed 0; the work does not depend on them): ``stereo_net_narrow``
(:mod:`structpred.models.stereo_net`, max_disp 64) and, when it is registered, helper
``monodepth_narrow`` (:mod:`structpred.models.monodepth`; imported lazily, the suite says so when
it is missing). Batch 1, a pair of a random smooth texture, the right view moved 8 px.

Rows per model and size:

- ``inference``: eval mode, ``torch.no_grad()``; the stereo network on the pair, the monocular one
  on the left view alone ``[1, 1, 3, H, W]``. Beside it, interleaved in the same run
  (:func:`~structpred.bench.timing.compare`), ``cv2.StereoSGBM`` on the same pair (colour uint8,
  ``numDisparities = 64``, ``blockSize = 5``, ``P1 = 8 * 3 * 25``, ``P2 = 32 * 3 * 25``: the
  OpenCV sample's settings), with its thread count set to the suite's.
- ``train step``: train mode, forward + backward + an Adam step on one pair (the stereo network
  with a disparity target; the monocular one self-supervised on the pair). No SGBM column.

Sizes: 256 x 512 (the issue's), and for inference only the extremes 64 x 128 and 512 x 1024
(``--quick``: 64 x 128 only, 1 repeat).

Throughput: GFLOP of one call counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions
and matrix products, forward and backward), divided by the median time, against this machine's
float32 matmul peak measured in the same run (:func:`structpred.bench.detection.matmul_peak`,
2048 x 2048 ``torch.mm`` on the same threads).

Ops (the stereo network's 1/4 grid at 256 x 512: 64 x 128, C = 16, D = 16, batch 2), against
references in this file that loop over the D disparities (one slice product / copy each):
:func:`~structpred.ops.stereo_volume.correlation_volume` (banded GEMM) and
:func:`~structpred.ops.stereo_volume.concat_volume` (one strided unfold), forward and
forward + backward.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.registry import get_model
from ..ops.stereo_volume import concat_volume, correlation_volume
from .detection import count_gflop, matmul_peak
from .timing import Comparison, compare, format_table, suite_parser, suite_repeats

SEED = 0
SIZE = (256, 512)
EXTREMES = ((64, 128), (512, 1024))
QUICK_SIZES = ((64, 128),)
SHIFT = 8  # px the right view is moved
SGBM_BLOCK = 5
SGBM_DISPARITIES = 64
MODELS = ("stereo_net_narrow", "monodepth_narrow")


@dataclass
class Row:
    """One measured case: median ms, GFLOP of one call, the matmul peak; SGBM's ms when timed beside."""

    name: str
    ms: float
    gflop: float
    peak_gflops: float
    sgbm_ms: float | None = None

    @property
    def images_per_s(self) -> float:
        return 1e3 / self.ms

    @property
    def gflops(self) -> float:
        return self.gflop / self.ms * 1e3

    @property
    def peak_percent(self) -> float:
        return 100 * self.gflops / self.peak_gflops


def format_rows(rows: list[Row], missing: list[str]) -> str:
    """Markdown table of the model rows, then one line per model that could not be measured."""
    lines = [
        "| case | ms | images/s | GFLOP | GFLOP/s | % of matmul peak | SGBM ms | ms / SGBM ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sgbm = f"{r.sgbm_ms:.1f} | {r.ms / r.sgbm_ms:.1f}" if r.sgbm_ms else "- | -"
        lines.append(
            f"| {r.name} | {r.ms:.1f} | {r.images_per_s:.2f} | {r.gflop:.2f} | {r.gflops:.1f} | "
            f"{r.peak_percent:.1f} | {sgbm} |"
        )
    return "\n".join(lines + [f"\n{m}" for m in missing])


def pair(height: int, width: int, seed: int = SEED) -> Tensor:
    """``[1, 2, 3, H, W]`` in [0, 1]: a smooth random texture (left) and the same moved SHIFT px (right)."""
    g = torch.Generator().manual_seed(seed)
    base = F.avg_pool2d(torch.rand(1, 3, height, width + SHIFT, generator=g), 5, 1, 2)  # (1, 3, H, W + s)
    left, right = base[..., :width], base[..., SHIFT:]  # right x - SHIFT shows base x = left x
    return torch.stack([left, right], dim=1).contiguous()  # (1, 2, 3, H, W)


def sgbm_call(views: Tensor) -> Callable[[], object]:
    """A call of OpenCV's StereoSGBM (the peer; colour uint8 views) on the pair ``[2, 3, H, W]``
    (``numDisparities`` 64, fewer on images too narrow for it: SGBM needs ``W > D + block / 2``)."""
    import cv2
    import numpy as np

    def bgr(view: Tensor) -> np.ndarray:
        rgb = (view.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(rgb[..., ::-1])  # (H, W, 3) BGR

    left, right = bgr(views[0]), bgr(views[1])
    matcher = cv2.StereoSGBM_create(  # type: ignore[attr-defined]
        minDisparity=0,
        numDisparities=min(SGBM_DISPARITIES, max(16, (views.shape[-1] - SGBM_BLOCK) // 16 * 16)),
        blockSize=SGBM_BLOCK,
        P1=8 * 3 * SGBM_BLOCK**2,
        P2=32 * 3 * SGBM_BLOCK**2,
        disp12MaxDiff=1,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=32,
    )
    return lambda: matcher.compute(left, right)


def median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _build(name: str) -> nn.Module:
    if name == "stereo_net_narrow":
        from ..models import stereo_net  # noqa: F401  (registers it)
    else:
        from ..models import monodepth  # noqa: F401  (registers it; a helper's module)
    torch.manual_seed(SEED)
    return get_model(name)


def model_rows(
    name: str,
    sizes: tuple[tuple[int, int], ...],
    train_sizes: tuple[tuple[int, int], ...],
    repeats: int,
    warmup: int,
    peak: float,
) -> list[Row]:
    """Inference rows (SGBM beside) at ``sizes`` and train-step rows at ``train_sizes`` for one model."""
    model = _build(name)
    stereo = name.startswith("stereo")
    rows = []
    for H, W in sizes:
        x = pair(H, W)
        inputs = x if stereo else x[:, :1]  # the monocular model sees the left view alone
        model.eval()

        def infer(model: nn.Module = model, inputs: Tensor = inputs) -> object:
            with torch.no_grad():
                return model(inputs)[0]

        gflop = count_gflop(infer)
        row = compare(f"{name} inference, {H}x{W}", infer, sgbm_call(x[0]), repeats=repeats, warmup=warmup)
        rows.append(Row(row.name, row.ours_ms, gflop, peak, row.peer_ms))
    for H, W in train_sizes:
        x = pair(H, W)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        targets = (
            [{"disparity": torch.full((1, H, W), float(SHIFT))}] if stereo else [{}]
        )  # mono: self-supervised

        def step(
            model: nn.Module = model,
            x: Tensor = x,
            opt: torch.optim.Optimizer = opt,
            targets: object = targets,
        ) -> None:
            _, losses = model(x, targets, predict=False)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()

        def counted(model: nn.Module = model, x: Tensor = x, targets: object = targets) -> None:
            _, losses = model(x, targets, predict=False)  # the step's FLOPs; weights untouched
            sum(losses.values()).backward()
            model.zero_grad()

        gflop = count_gflop(counted)
        rows.append(Row(f"{name} train step, {H}x{W}", median_ms(step, repeats, warmup), gflop, peak))
    return rows


def loop_correlation(left: Tensor, right: Tensor, D: int) -> Tensor:
    """The reference: one slice product and channel mean per disparity."""
    B, C, H, W = left.shape
    out = left.new_zeros(B, D, H, W)
    for d in range(min(D, W)):
        out[:, d, :, d:] = (left[..., d:] * right[..., : W - d]).mean(1)
    return out


def loop_concat(left: Tensor, right: Tensor, D: int) -> Tensor:
    """The reference (PSMNet's loop): one slice copy of each view per disparity."""
    B, C, H, W = left.shape
    out = left.new_zeros(B, 2 * C, D, H, W)
    for d in range(min(D, W)):
        out[:, :C, d, :, d:] = left[..., d:]
        out[:, C:, d, :, d:] = right[..., : W - d]
    return out


def _volume_call(
    fn: Callable[[Tensor, Tensor, int], Tensor], a: Tensor, b: Tensor, D: int, backward: bool
) -> Callable[[], None]:
    def call() -> None:
        out = fn(a, b, D)
        if backward:
            out.square().sum().backward()

    return call


def op_rows(repeats: int, warmup: int, quick: bool) -> list[Comparison]:
    """The cost volumes against the per-disparity loops, forward and forward + backward."""
    B, C, H, W, D = (2, 16, 16, 32, 8) if quick else (2, 16, 64, 128, 16)
    g = torch.Generator().manual_seed(SEED)
    left, right = torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g)
    rows = []
    for label, ours, ref in (
        ("correlation_volume (banded GEMM)", correlation_volume, loop_correlation),
        ("concat_volume (strided unfold)", concat_volume, loop_concat),
    ):
        if not torch.allclose(ours(left, right, D), ref(left, right, D), atol=1e-5):
            raise RuntimeError(f"{label} differs from its loop reference")
        for backward in (False, True):
            a, b = left.clone().requires_grad_(backward), right.clone().requires_grad_(backward)
            where = f"{' fwd+bwd' if backward else ''}, {H}x{W}x{C}, D={D}, batch {B} (peer: loop over D)"
            rows.append(
                compare(
                    label + where,
                    _volume_call(ours, a, b, D, backward),
                    _volume_call(ref, a, b, D, backward),
                    repeats=repeats,
                    warmup=warmup,
                )
            )
    return rows


def run(
    repeats: int = 5, threads: int = 2, quick: bool = False
) -> tuple[list[Row], list[str], list[Comparison], float]:
    """(model rows, missing-model notes, op rows, matmul peak GFLOP/s)."""
    import cv2

    torch.set_num_threads(threads)
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    warmup = 0 if quick else 1
    peak = matmul_peak(1024, 3) if quick else matmul_peak(2048, 10)
    sizes = QUICK_SIZES if quick else (SIZE, *EXTREMES)
    train_sizes = QUICK_SIZES if quick else (SIZE,)
    rows: list[Row] = []
    missing: list[str] = []
    try:
        for name in MODELS:
            try:
                rows += model_rows(name, sizes, train_sizes, repeats, warmup, peak)
            except (ImportError, ValueError) as err:  # the monocular model is another helper's; may be absent
                missing.append(f"{name}: not measured ({type(err).__name__}: {err})")
        ops = op_rows(repeats, warmup, quick)
    finally:
        cv2.setNumThreads(cv2_threads)
    return rows, missing, ops, peak


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown tables."""
    parser = suite_parser("depth", __doc__, 5)
    args = parser.parse_args(argv)
    repeats = suite_repeats(parser, args)
    previous_threads = torch.get_num_threads()
    try:
        rows, missing, ops, peak = run(repeats, args.threads, args.quick)
    finally:  # the caller (a test, a notebook) gets its own thread count back
        torch.set_num_threads(previous_threads)
    import cv2

    header = (
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads, median of {repeats} "
        f"runs (SGBM interleaved), matmul peak {peak:.1f} GFLOP/s"
    )
    if args.quick:
        header += " (QUICK: 64x128 only, 1 repeat: a smoke run, not figures)"
    text = "\n\n".join([header, format_rows(rows, missing), format_table(ops, "loop")])
    print(text)
    return text


if __name__ == "__main__":
    main()
