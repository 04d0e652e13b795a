"""The LSTM's hand-written BPTT (layers/lstm_function.py): gradcheck, and parity with ``torch.nn.LSTM``.

Parity covers outputs, final states and the gradients of every parameter, the input and both
initial states, at the edges (T=1, B=1, hidden 1), bidirectional, stacked and variable-length.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from structpred.layers import LSTM
from structpred.layers.lstm_function import LSTMScan, _reference_scan, _scaled_weights, lstm_scan


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One torch thread: tiny GEMMs on a loaded machine otherwise wait on a descheduled OpenMP thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(T: int, B: int, n_in: int, H: int, bias: bool = True, seed: int = 0) -> list[Any]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).requires_grad_()

    return [r(T, B, n_in), r(B, H), r(B, H), r(4 * H, n_in), r(4 * H, H), r(4 * H) if bias else None]


def _valid(lengths: list[int], T: int) -> Tensor:
    return (torch.arange(T)[:, None] < torch.tensor(lengths)).unsqueeze(2)  # (T, B) -> (T, B, 1)


@pytest.mark.parametrize(
    ("T", "lengths", "reverse", "bias"),
    [
        (4, None, False, True),
        (4, None, True, True),
        (4, [4, 2, 1], False, True),
        (4, [1, 3, 4], True, True),
        (1, None, False, False),
        (3, [3, 1, 2], False, False),
    ],
)
def test_gradcheck_float64(T: int, lengths: list[int] | None, reverse: bool, bias: bool) -> None:
    args = _inputs(T, 3, 2, 3, bias)
    valid = None if lengths is None else _valid(lengths, T)

    def f(*a: Tensor) -> tuple[Tensor, ...]:
        ins = list(a) + ([None] if not bias else [])
        return LSTMScan.apply(*ins, valid, reverse)

    assert torch.autograd.gradcheck(f, tuple(a for a in args if a is not None), atol=1e-8)


def test_function_is_the_path_under_autograd_and_matches_the_reference() -> None:
    x, h0, c0, w_ih, w_hh, b = _inputs(5, 2, 3, 4)
    valid = _valid([5, 3], 5)
    out, h_n, c_n = lstm_scan(x, h0, c0, w_ih, w_hh, b, b, valid, reverse=True)
    assert type(out.grad_fn).__name__.startswith("LSTMScanBackward")
    ref = _reference_scan(x, h0, c0, w_ih, w_hh, b + b, valid, True)
    with torch.no_grad():
        fast = lstm_scan(x, h0, c0, w_ih, w_hh, b, b, valid, reverse=True)
    for got, fst, want in zip((out, h_n, c_n), fast, ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        torch.testing.assert_close(fst, want, atol=1e-12, rtol=0)
    # Saved tensors are not modified by the backward: a retained graph gives the same gradients twice.
    loss = out.sum() + h_n.square().sum() + c_n.sum()
    first = torch.autograd.grad(loss, (x, w_hh), retain_graph=True)
    second = torch.autograd.grad(loss, (x, w_hh))
    for a, b2 in zip(first, second, strict=True):
        assert torch.equal(a, b2)


CASES = [  # T, B, I, H, layers, bidirectional, lengths
    (1, 1, 1, 1, 1, False, None),
    (1, 3, 2, 4, 2, True, None),
    (6, 1, 3, 5, 1, False, None),
    (5, 3, 4, 1, 2, False, [5, 2, 4]),
    (7, 4, 3, 6, 2, True, [7, 1, 3, 7]),
    (9, 2, 8, 16, 3, True, None),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("T", "B", "n_in", "H", "L", "bi", "lengths"), CASES)
def test_parity_with_torch_lstm(
    T: int, B: int, n_in: int, H: int, L: int, bi: bool, lengths: list[int] | None, dtype: torch.dtype
) -> None:
    torch.manual_seed(T * 100 + H)
    peer = nn.LSTM(n_in, H, num_layers=L, bidirectional=bi).to(dtype)
    ours = LSTM(n_in, H, num_layers=L, bidirectional=bi).to(dtype)
    ours.load_state_dict(peer.state_dict())
    D = 2 if bi else 1
    x = torch.randn(T, B, n_in, dtype=dtype, requires_grad=True)
    h0 = torch.randn(L * D, B, H, dtype=dtype, requires_grad=True)
    c0 = torch.randn(L * D, B, H, dtype=dtype, requires_grad=True)
    if lengths is None:
        p_out, (p_h, p_c) = peer(x, (h0, c0))
        o_out, (o_h, o_c) = ours(x, (h0, c0))
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        p_packed, (p_h, p_c) = peer(packed, (h0, c0))
        p_out = pad_packed_sequence(p_packed, total_length=T)[0]
        o_out, (o_h, o_c) = ours(x, (h0, c0), lengths=lengths)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    weights = [torch.randn_like(t) for t in (p_out, p_h, p_c)]
    p_loss = sum((t * w).sum() for t, w in zip((p_out, p_h, p_c), weights, strict=True))
    o_loss = sum((t * w).sum() for t, w in zip((o_out, o_h, o_c), weights, strict=True))
    wrt_p = [x, h0, c0, *peer.parameters()]
    wrt_o = [x, h0, c0, *ours.parameters()]
    p_grads = torch.autograd.grad(p_loss, wrt_p)
    o_grads = torch.autograd.grad(o_loss, wrt_o)
    for got, want in zip((o_out, o_h, o_c), (p_out, p_h, p_c), strict=True):
        torch.testing.assert_close(got, want, atol=tol, rtol=0)
    names = ["input", "h0", "c0", *(n for n, _ in peer.named_parameters())]
    for name, got, want in zip(names, o_grads, p_grads, strict=True):
        err = float((got - want).abs().max())
        assert err <= tol, f"d/d{name}: max abs error {err:.3g} > {tol:g}"


def test_frozen_weights_take_the_no_grad_path_and_input_grads_still_flow() -> None:
    ours = LSTM(3, 4)
    ours.requires_grad_(False)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = ours(x)
    out.sum().backward()
    peer = nn.LSTM(3, 4)
    peer.load_state_dict(ours.state_dict())
    x2 = x.detach().clone().requires_grad_()
    peer(x2)[0].sum().backward()
    assert x.grad is not None and x2.grad is not None
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("steps", "contiguous"), [(16, True), (15, False)])
def test_scaled_weights_are_w_transposed_with_the_g_gate_times_minus_two(
    steps: int, contiguous: bool
) -> None:
    _, _, _, w_ih, w_hh, b = _inputs(2, 2, 3, 4)
    before = [t.detach().clone() for t in (w_ih, w_hh, b)]
    with torch.no_grad():  # as inside the Function's forward and the no-grad path
        wt_hh, wt_ih, b2 = _scaled_weights(w_ih, w_hh, b, steps)
    scale = torch.tensor([1.0, 1.0, -2.0, 1.0], dtype=torch.float64).repeat_interleave(4)  # (4H,)
    # From 16 steps on, W^T is a contiguous copy: the per-step GEMM's fast layout.
    assert wt_hh.is_contiguous() == contiguous
    for got, want in ((wt_hh, w_hh.t() * scale), (wt_ih, w_ih.t() * scale)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert b2 is not None
    torch.testing.assert_close(b2, b * scale, atol=0, rtol=0)
    for t, old in zip((w_ih, w_hh, b), before, strict=True):
        assert torch.equal(t, old)  # the parameters are not modified


@pytest.mark.parametrize("reverse", [False, True])
def test_float32_paths_agree_at_a_bench_like_size(reverse: bool) -> None:
    """The Function (per-step factors, mv bias gradient) against autograd through the reference loop."""
    g = torch.Generator().manual_seed(3)
    T, B, H = 20, 8, 32  # T >= 16: the contiguous-W^T branch
    args = [
        torch.randn(*s, generator=g) * 0.3
        for s in ((T, B, H), (B, H), (B, H), (4 * H, H), (4 * H, H), (4 * H,))
    ]
    fast = [a.clone().requires_grad_() for a in args]
    ref = [a.clone().requires_grad_() for a in args]
    x, h0, c0, w_ih, w_hh, b = fast
    out_f = lstm_scan(x, h0, c0, w_ih, w_hh, b, torch.zeros(4 * H), reverse=reverse)
    x, h0, c0, w_ih, w_hh, b = ref
    out_r = _reference_scan(x, h0, c0, w_ih, w_hh, b, None, reverse)
    w = [torch.randn(o.shape, generator=g) for o in out_r]
    torch.stack([(o * k).sum() for o, k in zip(out_f, w, strict=True)]).sum().backward()
    torch.stack([(o * k).sum() for o, k in zip(out_r, w, strict=True)]).sum().backward()
    for o_f, o_r in zip(out_f, out_r, strict=True):
        torch.testing.assert_close(o_f, o_r, atol=2e-6, rtol=0)
    for a_f, a_r in zip(fast, ref, strict=True):
        assert a_f.grad is not None and a_r.grad is not None
        torch.testing.assert_close(a_f.grad, a_r.grad, atol=2e-5, rtol=0)
