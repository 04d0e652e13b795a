"""RNN benchmark: structpred.layers.LSTM / RNN against torch.nn.LSTM / RNN, identical weights, one run.

Inputs (the issue's): a 2-layer LSTM, hidden 256, input 256, batch 32, 100 steps, float32,
``(T, B, I)`` layout; forward + backward of ``output.sum()`` (parameter gradients cleared each run),
and forward alone under ``torch.no_grad()``. The RNN row is a 2-layer tanh RNN of the same size.

Extremes (1-layer LSTMs, forward + backward and forward alone): one step (T=1), a long sequence
(T=1000), one sequence (B=1), a small (H=32) and a large (H=1024, T=20) hidden size. At small
sizes a step is a few microseconds of work, so the per-step dispatch of ours (seven tensor ops a
step without autograd, fourteen with it, each ~1.5 us of fixed cost) shows against the peer's
fused oneDNN kernel; see docs/rnn_speed.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..layers import LSTM, RNN
from .timing import Comparison, bench_main, compare

Case = tuple[str, Callable[[], object], Callable[[], object], float | None]


def _fwd_bwd(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x)[0].sum().backward()

    return step


def _fwd(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            model(x)

    return step


def _pair(kind: str, hidden: int, layers: int) -> tuple[nn.Module, nn.Module]:
    """(ours, peer) with the peer's weights loaded into ours."""
    peer: nn.Module = nn.LSTM(hidden, hidden, layers) if kind == "lstm" else nn.RNN(hidden, hidden, layers)
    ours: nn.Module = LSTM(hidden, hidden, layers) if kind == "lstm" else RNN(hidden, hidden, layers)
    ours.load_state_dict(peer.state_dict())
    return ours, peer


def _extremes(quick: bool, g: torch.Generator) -> list[Case]:
    """1-layer LSTM rows at the extremes: (label, hidden, batch, steps); quick shrinks them."""
    sizes = [("T1", 256, 32, 1), ("T1000", 128, 16, 1000), ("B1", 256, 1, 100),
             ("H32", 32, 32, 100), ("H1024", 1024, 32, 20)]
    cases: list[Case] = []
    for label, hidden, batch, steps in sizes:
        if quick:
            hidden, batch, steps = min(hidden, 16), min(batch, 4), min(steps, 12)
        ours, peer = _pair("lstm", hidden, 1)
        x = torch.randn(steps, batch, hidden, generator=g)  # (T, B, I)
        name = f"lstm {label}: 1x{hidden} B{batch} T{steps}"
        cases.append((f"{name} fwd+bwd (extra)", _fwd_bwd(ours, x), _fwd_bwd(peer, x), None))
        cases.append((f"{name} fwd (no_grad, extra)", _fwd(ours, x), _fwd(peer, x), None))
    return cases


def run(repeats: int = 10, threads: int = 2, quick: bool = False) -> list[Comparison]:
    """Run every case; ``quick`` shrinks inputs (for smoke tests, not for figures)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    hidden, steps, batch = (32, 10, 4) if quick else (256, 100, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, hidden, generator=g)  # (T, B, I)
    ours_lstm, peer_lstm = _pair("lstm", hidden, 2)
    ours_rnn, peer_rnn = _pair("rnn", hidden, 2)
    size = f"2x{hidden} B{batch} T{steps}"
    cases: list[Case] = [
        (f"lstm {size} fwd+bwd", _fwd_bwd(ours_lstm, x), _fwd_bwd(peer_lstm, x), 1.0),
        (f"lstm {size} fwd (no_grad)", _fwd(ours_lstm, x), _fwd(peer_lstm, x), 1.0),
        (f"rnn tanh {size} fwd+bwd", _fwd_bwd(ours_rnn, x), _fwd_bwd(peer_rnn, x), 1.0),
        *_extremes(quick, g),
    ]
    return [compare(name, a, b, repeats=repeats, target=t) for name, a, b, t in cases]


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown table."""
    return bench_main("rnn", __doc__, run, "torch.nn", 10, argv)


if __name__ == "__main__":
    main()
