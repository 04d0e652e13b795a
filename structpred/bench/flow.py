"""Optical flow benchmark: our RAFT against torchvision's with identical weights, and the correlation ops.

Models: torchvision's ``raft_small`` and ``raft_large`` (``weights=None``, seed 0), converted by
:func:`structpred.models.from_torchvision`, so both sides hold the same tensors; eval mode,
``torch.no_grad()``, batch 1, 12 updates, frames of a random smooth texture moved by a few
pixels (the content does not change the work). Before timing, both sides must agree (every
update's flow within 1e-3 px). Rows per model and size:

- ``forward``: what a user calls for a flow field. Ours: ``model(pairs)`` (frames in [0, 1],
  normalised inside, only the last update upsampled); torchvision: ``RAFT(image1, image2)``
  (frames in [-1, 1]; it upsamples every update), of which the last is used.
- ``flow()``: like for like, our :meth:`~structpred.models.raft.RAFT.flow` returns the same
  list of 12 upsampled fields as torchvision's forward.

Sizes: 368 x 496 (Sintel-like, the goal), 128 x 128 (the least torchvision takes) and, unless
``--quick``, 440 x 1024 for RAFT-small.

Correlation ops (1/8 of 368 x 496 = 46 x 62, batch 1), against references in this file:

- local (FlowNetC / PWC, d = 4): :func:`~structpred.ops.correlation.local_correlation` vs the
  textbook ``F.unfold`` implementation (every displaced copy of f2 materialised, then a
  channel sum), at 46 x 62 x 128 ch and 92 x 124 x 64 ch;
- all pairs: our volume + 4-level pyramid vs torchvision's ``CorrBlock.build_pyramid``;
  our :func:`~structpred.ops.correlation.pyramid_lookup` vs its ``index_pyramid`` (r = 4, the
  same pyramid, coordinates spread over the image); and RAFT's own path, the packed bordered
  pyramid (:mod:`structpred.ops.correlation_packed`) built once and read 12 times, vs
  ``build_pyramid`` + 12 ``index_pyramid`` reads.

Last, the all-pairs volume's memory (:func:`~structpred.ops.correlation.all_pairs_bytes`,
4 levels, float32, batch 1) per input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.raft import RAFT
from ..ops.correlation import (
    all_pairs_bytes,
    all_pairs_correlation,
    correlation_pyramid,
    local_correlation,
    pyramid_lookup,
)
from ..ops.correlation_packed import packed_correlation_pyramid, packed_lookup
from .timing import Comparison, compare, format_table, suite_parser, suite_repeats

SEED = 0
TARGET = 1.0  # ours / peer
UPDATES = 12
SIZES = ((368, 496), (128, 128))
LARGE_SIZE = (440, 1024)  # RAFT-small only
QUICK_SIZES = ((128, 128),)
QUICK_UPDATES = 2
MEMORY_SIZES = ((128, 128), (368, 496), (440, 1024), (720, 1280), (1080, 1920))
AGREE_PX = 1e-3


def frames(height: int, width: int, seed: int = SEED) -> Tensor:
    """A pair ``[1, 2, 3, H, W]`` in [0, 1]: a smooth random texture and the same moved (2, 1) px."""
    g = torch.Generator().manual_seed(seed)
    base = F.avg_pool2d(torch.rand(1, 3, height + 8, width + 8, generator=g), 5, 1, 2)  # (1, 3, H + 8, W + 8)
    a = base[:, :, 4 : 4 + height, 4 : 4 + width]
    b = base[:, :, 3 : 3 + height, 2 : 2 + width]
    return torch.stack([a, b], dim=1).contiguous()  # (1, 2, 3, H, W)


def build_pair(name: str) -> tuple[nn.Module, RAFT]:
    """(torchvision model, ours) with the same weights, both in eval mode."""
    from torchvision.models import optical_flow

    from ..models import from_torchvision

    torch.manual_seed(SEED)
    peer = getattr(optical_flow, name)(weights=None).eval()
    ours = from_torchvision(peer).eval()
    assert isinstance(ours, RAFT)
    return peer, ours


def _check_flows(name: str, ours: list[Tensor], peer: list[Tensor]) -> None:
    if len(ours) != len(peer):
        raise RuntimeError(f"{name}: {len(ours)} flows from structpred, {len(peer)} from torchvision")
    worst = max(float((o - p).abs().max()) for o, p in zip(ours, peer, strict=True))
    if worst > AGREE_PX:
        raise RuntimeError(f"{name}: flows differ by {worst:.3g} px (> {AGREE_PX})")


def model_rows(
    name: str, sizes: tuple[tuple[int, int], ...], repeats: int, warmup: int, updates: int = UPDATES
) -> list[Comparison]:
    """forward and flow() rows of one RAFT at each size."""
    peer, ours = build_pair(name)
    ours.config.num_flow_updates = updates  # forward's T (flow() takes it as an argument)
    rows = []
    for H, W in sizes:
        pair = frames(H, W)  # (1, 2, 3, H, W) in [0, 1]
        a, b = (2 * pair[:, 0] - 1).contiguous(), (2 * pair[:, 1] - 1).contiguous()  # torchvision's input

        def peer_all(a: Tensor = a, b: Tensor = b) -> list[Tensor]:
            with torch.no_grad():
                return list(peer(a, b, num_flow_updates=updates))

        def ours_all(a: Tensor = a, b: Tensor = b) -> list[Tensor]:
            with torch.no_grad():
                return list(ours.flow(a, b, num_flow_updates=updates))

        def ours_forward(pair: Tensor = pair) -> Tensor:
            with torch.no_grad():
                preds, _ = ours(pair)
            return preds["flow"]

        expected = peer_all()
        _check_flows(name, ours_all(), expected)
        if float((ours_forward() - expected[-1]).abs().max()) > AGREE_PX:
            raise RuntimeError(f"{name}: forward's flow differs from torchvision's last")
        where = f"{H}x{W}, batch 1, {updates} updates"
        rows.append(
            compare(
                f"{name} forward (last flow), {where}",
                ours_forward,
                peer_all,
                repeats=repeats,
                warmup=warmup,
                target=TARGET,
            )
        )
        rows.append(
            compare(
                f"{name} flow() (all {updates} flows, like for like), {where}",
                ours_all,
                peer_all,
                repeats=repeats,
                warmup=warmup,
                target=TARGET,
            )
        )
    return rows


def unfold_local_correlation(f1: Tensor, f2: Tensor, d: int) -> Tensor:
    """The textbook local correlation: every displaced f2 copy via ``F.unfold``, then mean over C."""
    B, C, H, W = f1.shape
    side = 2 * d + 1
    shifted = F.unfold(f2, kernel_size=side, padding=d)  # (B, C * side^2, H * W)
    shifted = shifted.view(B, C, side * side, H, W)  # (B, C, K, H, W), K dy-major
    return (f1[:, :, None] * shifted).sum(dim=1) / C  # (B, K, H, W)


def op_rows(repeats: int, warmup: int, quick: bool) -> list[Comparison]:
    """The correlation ops against their references (see the module doc)."""
    from torchvision.models.optical_flow.raft import CorrBlock

    g = torch.Generator().manual_seed(SEED)
    rows = []
    local_cases = ((1, 64, 12, 16),) if quick else ((1, 128, 46, 62), (1, 64, 92, 124))
    for B, C, H, W in local_cases:
        f1, f2 = torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g)
        ours = local_correlation(f1, f2, 4)
        if not torch.allclose(ours, unfold_local_correlation(f1, f2, 4), atol=1e-4):
            raise RuntimeError("local_correlation differs from the unfold reference")

        def ours_local(f1: Tensor = f1, f2: Tensor = f2) -> Tensor:
            return local_correlation(f1, f2, 4)

        def peer_local(f1: Tensor = f1, f2: Tensor = f2) -> Tensor:
            return unfold_local_correlation(f1, f2, 4)

        rows.append(
            compare(
                f"local correlation d=4, {H}x{W}x{C} (peer: F.unfold reference)",
                ours_local,
                peer_local,
                repeats=repeats,
                warmup=warmup,
                target=TARGET,
            )
        )
    H, W = (16, 16) if quick else (46, 62)
    C = 256
    f1, f2 = torch.randn(1, C, H, W, generator=g), torch.randn(1, C, H, W, generator=g)
    block = CorrBlock(num_levels=4, radius=4)

    def peer_pyramid() -> list[Tensor]:
        block.build_pyramid(f1, f2)
        return list(block.corr_pyramid)

    def ours_pyramid() -> list[Tensor]:
        return correlation_pyramid(all_pairs_correlation(f1, f2), 4)

    theirs = peer_pyramid()
    mine = ours_pyramid()
    if any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(mine, theirs, strict=True)):
        raise RuntimeError("the all-pairs pyramid differs from torchvision's CorrBlock")
    rows.append(
        compare(
            f"all-pairs volume + 4-level pyramid, {H}x{W}x{C} (peer: torchvision CorrBlock)",
            ours_pyramid,
            peer_pyramid,
            repeats=repeats,
            warmup=warmup,
            target=TARGET,
        )
    )
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )
    coords = torch.stack([xs, ys])[None] + 6 * torch.randn(1, 2, H, W, generator=g)  # (1, 2, H, W)
    with torch.no_grad():
        expected = block.index_pyramid(coords)
        got = pyramid_lookup(mine, coords, 4)
    if not torch.allclose(got, expected, atol=1e-4):
        raise RuntimeError("pyramid_lookup differs from torchvision's index_pyramid")

    def peer_lookup() -> Tensor:
        with torch.no_grad():
            return block.index_pyramid(coords)

    def ours_lookup() -> Tensor:
        with torch.no_grad():
            return pyramid_lookup(mine, coords, 4)

    rows.append(
        compare(
            f"pyramid lookup r=4, 4 levels, {H}x{W} (peer: torchvision CorrBlock)",
            ours_lookup,
            peer_lookup,
            repeats=repeats,
            warmup=warmup,
            target=TARGET,
        )
    )
    # RAFT's own layout (ops/correlation_packed.py): build once + 12 lookups, as one forward does
    with torch.no_grad():
        packed = packed_correlation_pyramid(f1, f2, 4)
        if not torch.allclose(packed_lookup(packed, coords, 4), expected, atol=1e-4):
            raise RuntimeError("packed_lookup differs from torchvision's index_pyramid")

    def peer_forward_reads() -> Tensor:
        with torch.no_grad():
            block.build_pyramid(f1, f2)
            return torch.stack([block.index_pyramid(coords) for _ in range(12)])

    def ours_forward_reads() -> Tensor:
        with torch.no_grad():
            pyramid = packed_correlation_pyramid(f1, f2, 4)
            return torch.stack([packed_lookup(pyramid, coords, 4) for _ in range(12)])

    rows.append(
        compare(
            f"packed pyramid + 12 lookups r=4 (RAFT's path), {H}x{W}x{C} (peer: CorrBlock build + 12 reads)",
            ours_forward_reads,
            peer_forward_reads,
            repeats=repeats,
            warmup=warmup,
            target=TARGET,
        )
    )
    return rows


def memory_table(sizes: tuple[tuple[int, int], ...] = MEMORY_SIZES) -> str:
    """Markdown: the all-pairs volume + pyramid's bytes per input size (batch 1, float32)."""
    lines = ["| input | 1/8 grid | volume + 4 levels (MiB) |", "|---|---|---:|"]
    for H, W in sizes:
        h, w = -(-H // 8), -(-W // 8)
        lines.append(f"| {H}x{W} | {h}x{w} | {all_pairs_bytes(1, h, w, 4) / 2**20:.1f} |")
    return "\n".join(lines)


def run(repeats: int = 5, threads: int = 2, quick: bool = False) -> tuple[list[Comparison], list[Comparison]]:
    """(model rows, op rows); ``quick`` shrinks every input (smoke tests, not figures)."""
    torch.set_num_threads(threads)
    warmup = 0 if quick else 1  # plus the agreement check's call on each side
    sizes = QUICK_SIZES if quick else SIZES
    models: list[Comparison] = []
    for name in ("raft_small", "raft_large"):
        models += model_rows(name, sizes, repeats, warmup, QUICK_UPDATES if quick else UPDATES)
    if not quick:
        models += model_rows("raft_small", (LARGE_SIZE,), max(1, repeats // 2), 0)
    return models, op_rows(repeats, warmup, quick)


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the three Markdown tables."""
    parser = suite_parser("flow", __doc__, 5)
    args = parser.parse_args(argv)
    repeats = suite_repeats(parser, args)
    previous_threads = torch.get_num_threads()
    try:
        models, ops = run(repeats, args.threads, args.quick)
    finally:  # the caller (a test, a notebook) gets its own thread count back
        torch.set_num_threads(previous_threads)
    import torchvision

    header = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, "
        f"median of {repeats} alternating runs"
    )
    if args.quick:
        header += " (QUICK: small inputs, 2 updates: a smoke run, not figures)"
    text = "\n\n".join(
        [
            header,
            format_table(models, "torchvision"),
            format_table(ops, "reference"),
            "All-pairs correlation memory:\n\n" + memory_table(),
        ]
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
