"""Swin benchmark: our ``swin_tiny_patch4_window7_224`` against timm's with identical weights, one run.

timm's ``swin_tiny_patch4_window7_224`` (``pretrained=False``, seed 0, 1000 classes, drop path 0)
is converted to ours by :func:`structpred.models.from_timm`, so both sides hold the same tensors.
Cases:

- inference, batch 8 at 224 x 224: ``eval()``, ``torch.no_grad()``, normalised images in, logits
  out (timm's ``model(x)``, our ``model.logits(x)``);
- train step, batch 8 at 224 x 224: ``train()``, ``zero_grad``, logits, cross-entropy against
  fixed labels, backward;
- detection backbone, batch 1 at 512 x 512, inference: our ``backbone.forward_features(x)`` (four
  NCHW maps, strides 4-32) against timm's ``features_only=True, strict_img_size=False,
  img_size=512`` model holding the same tensors; timm returns NHWC maps, so its side includes the
  ``permute(0, 3, 1, 2)`` to NCHW (a view on both sides, as ours).

Before timing, both sides must agree (logits / maps within 1e-4, the same loss). The two sides then
run alternately (:func:`~structpred.bench.timing.compare`), medians of ``--repeats``.

``--roll-path`` adds, in the same run, ours against ours with
:func:`~structpred.backbones.swin_window.gathered_windows` off (the roll / view copies and no bias
cache: the path traced and exported graphs take, and ours before the gathered windows), same cases.

Throughput: the FLOPs of one call counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
products, convolutions and attention, forward and backward) on timm's side, divided by each side's
median time, against this machine's float32 matmul peak measured in the same run
(:func:`structpred.bench.detection.matmul_peak`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .detection import Throughput, count_gflop, format_throughput, matmul_peak
from .timing import Comparison, compare, format_table, suite_parser, suite_repeats
from .vit import classifier_train_step

MODEL = "swin_tiny_patch4_window7_224"
BATCH, IMAGE, DETECTION_BATCH, DETECTION_IMAGE = 8, 224, 1, 512
QUICK = dict(batch=2, image=64, detection_image=96, depths=(1, 1, 1, 1))
SEED = 0
TARGET = 1.0  # ours / timm, every row


def build_pair(image: int, depths: tuple[int, ...] | None) -> tuple[nn.Module, nn.Module]:
    """(timm's classifier, ours converted from it), both in eval mode."""
    import timm

    from ..models import from_timm

    torch.manual_seed(SEED)
    kwargs: dict[str, Any] = {} if depths is None else {"depths": depths}
    peer = timm.create_model(MODEL, pretrained=False, img_size=image, drop_path_rate=0.0, **kwargs).eval()
    return peer, from_timm(peer).eval()


def build_detection_pair(image: int, depths: tuple[int, ...] | None) -> tuple[nn.Module, nn.Module]:
    """(timm's ``features_only`` model at ``image``, our backbone) with the same tensors, eval mode."""
    import timm

    peer_cls, ours = build_pair(image, depths)
    kwargs: dict[str, Any] = {} if depths is None else {"depths": depths}
    peer = timm.create_model(
        MODEL, pretrained=False, features_only=True, strict_img_size=False, img_size=image, **kwargs
    ).eval()
    # timm's feature wrapper flattens its stages to ``layers_i``; it has no final norm and no head.
    state = {
        k.replace("layers.", "layers_", 1): v
        for k, v in peer_cls.state_dict().items()
        if not k.startswith(("head.", "norm."))
    }
    peer.load_state_dict(state)
    return peer, ours.backbone  # type: ignore[return-value]


def _check_close(what: str, ours: list[Tensor], peer: list[Tensor]) -> None:
    for a, b in zip(ours, peer, strict=True):
        if a.shape != b.shape or float((a - b).abs().max()) > 1e-4:
            raise RuntimeError(f"{MODEL}: {what} differ from timm's ({tuple(a.shape)} vs {tuple(b.shape)})")


def _throughput(name: str, ours: Callable[[], object], peer: Callable[[], object], row: Comparison,
                peak: float) -> Throughput:  # fmt: skip
    return Throughput(name, count_gflop(peer), count_gflop(ours), row.ours_ms, row.peer_ms, peak)


def _rolled(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with the gathered-window paths off (the roll / view path)."""
    from ..backbones.swin_window import gathered_windows

    def call() -> Any:
        with gathered_windows(False):
            return fn()

    return call


def run(
    repeats: int = 5, threads: int = 2, quick: bool = False, roll_path: bool = False
) -> tuple[list[Comparison], list[Throughput], float, list[Comparison]]:
    """Every case: ``(rows, throughput rows, matmul peak GFLOP/s, rows against our roll / view path)``
    (the last empty without ``roll_path``); ``quick`` shrinks everything."""
    torch.set_num_threads(threads)
    peak = matmul_peak(*((1024, 3) if quick else (2048, 10)))
    batch, image = (int(QUICK["batch"]), int(QUICK["image"])) if quick else (BATCH, IMAGE)  # type: ignore[call-overload]
    depths: tuple[int, ...] | None = QUICK["depths"] if quick else None  # type: ignore[assignment]
    warmup = 0 if quick else 1  # plus the agreement check's call on each side
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, 3, image, image, generator=g)
    labels = torch.randint(0, 1000, (batch,), generator=g)
    peer, ours = build_pair(image, depths)
    where = f"batch {batch}, {image}x{image}"

    def infer_peer() -> Tensor:
        with torch.no_grad():
            return peer(x)

    def infer_ours() -> Tensor:
        with torch.no_grad():
            return ours.logits(x)  # type: ignore[operator]

    _check_close("logits", [infer_ours()], [infer_peer()])
    rows = [compare(f"{MODEL} inference, {where}", infer_ours, infer_peer, repeats, warmup, TARGET)]
    rolled: list[Comparison] = []
    if roll_path:
        _check_close("logits (roll path)", [_rolled(infer_ours)()], [infer_ours()])
        rolled.append(compare(rows[-1].name, infer_ours, _rolled(infer_ours), repeats, warmup, TARGET))
    throughput = [_throughput(f"{MODEL} inference, {where}", infer_ours, infer_peer, rows[-1], peak)]

    peer.train()
    ours.train()
    step_peer, step_ours = (
        classifier_train_step(peer, x, labels, False),
        classifier_train_step(ours, x, labels, True),
    )
    mine, theirs = step_ours(), step_peer()
    if not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{MODEL}: training loss {float(mine):.6g}, timm's {float(theirs):.6g}")
    label = f"{MODEL} train step (zero_grad + forward + CE + backward), {where}"
    rows.append(compare(label, step_ours, step_peer, repeats, warmup, TARGET))
    throughput.append(_throughput(f"{MODEL} train step, {where}", step_ours, step_peer, rows[-1], peak))
    if roll_path:
        rolled.append(compare(label, step_ours, _rolled(step_ours), repeats, warmup, TARGET))

    side = int(QUICK["detection_image"]) if quick else DETECTION_IMAGE  # type: ignore[call-overload]
    d_batch = 1 if quick else DETECTION_BATCH
    features_peer, backbone = build_detection_pair(side, depths)
    xd = torch.randn(d_batch, 3, side, side, generator=g)

    def maps_peer() -> list[Tensor]:
        with torch.no_grad():
            return [m.permute(0, 3, 1, 2) for m in features_peer(xd)]  # NHWC -> NCHW (a view)

    def maps_ours() -> list[Tensor]:
        with torch.no_grad():
            return list(backbone.forward_features(xd).values())  # type: ignore[operator]

    _check_close("feature maps", maps_ours(), maps_peer())
    label = f"Swin-T backbone forward_features (4 NCHW maps), batch {d_batch}, {side}x{side}"
    rows.append(compare(label, maps_ours, maps_peer, repeats, warmup, TARGET))
    throughput.append(_throughput(label, maps_ours, maps_peer, rows[-1], peak))
    if roll_path:
        rolled.append(compare(label, maps_ours, _rolled(maps_ours), repeats, warmup, TARGET))
    return rows, throughput, peak, rolled


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return both Markdown tables."""
    import timm

    parser = suite_parser("swin", __doc__, 5, quick_help="tiny inputs and depths, 1 repeat: a smoke run")
    parser.add_argument(
        "--roll-path", action="store_true", help="also time ours against our roll / view path"
    )
    args = parser.parse_args(argv)
    repeats = suite_repeats(parser, args)
    previous_threads = torch.get_num_threads()
    try:
        rows, throughput, peak, rolled = run(repeats, args.threads, args.quick, args.roll_path)
    finally:  # the caller (a test, a notebook) gets its own thread count back
        torch.set_num_threads(previous_threads)
    header = (
        f"torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, median of {repeats} "
        f"alternating runs; matmul peak {peak:.1f} GFLOP/s (float32 torch.mm)"
    )
    if args.quick:
        header += " (QUICK: tiny inputs and depths, not the sizes named in the rows)"
    tables = [header, format_table(rows, "timm"), format_throughput(throughput, "timm", "case", "GFLOP")]
    if rolled:
        tables.append(format_table(rolled, "roll / view path"))
    text = "\n\n".join(tables)
    print(text)
    return text


if __name__ == "__main__":
    main()
