"""RNN benchmark: structpred.layers.LSTM / RNN against torch.nn.LSTM / RNN, identical weights, one run.

Inputs (the issue's): a 2-layer LSTM, hidden 256, input 256, batch 32, 100 steps, float32,
``(T, B, I)`` layout; forward + backward of ``output.sum()`` (parameter gradients cleared each run),
and forward alone under ``torch.no_grad()``. The RNN row is a 2-layer tanh RNN of the same size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..layers import LSTM, RNN
from .timing import Comparison, bench_main, compare


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


def run(repeats: int = 10, threads: int = 2, quick: bool = False) -> list[Comparison]:
    """Run every case; ``quick`` shrinks inputs (for smoke tests, not for figures)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    hidden, steps, batch = (32, 10, 4) if quick else (256, 100, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, hidden, generator=g)  # (T, B, I)
    peer_lstm = nn.LSTM(hidden, hidden, num_layers=2)
    ours_lstm = LSTM(hidden, hidden, num_layers=2)
    ours_lstm.load_state_dict(peer_lstm.state_dict())
    peer_rnn = nn.RNN(hidden, hidden, num_layers=2)
    ours_rnn = RNN(hidden, hidden, num_layers=2)
    ours_rnn.load_state_dict(peer_rnn.state_dict())

    cases: list[tuple[str, Callable[[], object], Callable[[], object], float | None]] = [
        ("lstm 2x256 B32 T100 fwd+bwd", _fwd_bwd(ours_lstm, x), _fwd_bwd(peer_lstm, x), 1.5),
        ("lstm 2x256 B32 T100 fwd (no_grad, extra)", _fwd(ours_lstm, x), _fwd(peer_lstm, x), None),
        ("rnn tanh 2x256 B32 T100 fwd+bwd (extra)", _fwd_bwd(ours_rnn, x), _fwd_bwd(peer_rnn, x), None),
    ]
    return [compare(name, a, b, repeats=repeats, target=t) for name, a, b, t in cases]


def main(argv: list[str] | None = None) -> str:
    """CLI entry: run, print and return the Markdown table."""
    return bench_main("rnn", __doc__, run, "torch.nn", 10, argv)


if __name__ == "__main__":
    main()
