"""BPTT helpers: truncation really cuts the graph, clipping equals torch's, gradients through time."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from structpred.layers import LSTM, RNN, LSTMCell, RNNCell
from structpred.layers.bptt import (
    GradientNorms,
    clip_grad_norm,
    detach_state,
    grad_norm,
    gradient_norms_through_time,
    plot_gradient_norms,
    rnn_vs_lstm_gradient_norms,
    truncated_bptt,
    unroll,
)


def _sum_loss(out: Tensor, _target: Tensor) -> Tensor:
    return out.sum()


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipping and a no-op
def test_clip_grad_norm_equals_torch(max_norm: float, norm_type: float) -> None:
    results = []
    for clip in (clip_grad_norm, nn.utils.clip_grad_norm_):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        m[0].bias.requires_grad_(False)  # a parameter without .grad is skipped
        (m(torch.randn(4, 5)) ** 2).sum().mul(10).backward()
        total = clip(m.parameters(), max_norm, norm_type)
        results.append((total, [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    (ours_total, ours_grads), (peer_total, peer_grads) = results
    torch.testing.assert_close(ours_total, peer_total)
    for a, b in zip(ours_grads, peer_grads, strict=True):
        torch.testing.assert_close(a, b)
    if max_norm < 1:
        assert ours_total > 1
        per_tensor = torch.stack([torch.linalg.vector_norm(g, norm_type) for g in ours_grads])
        after = torch.linalg.vector_norm(per_tensor, norm_type)
        assert after == pytest.approx(max_norm, rel=1e-4)


def test_clip_grad_norm_single_tensor_and_bad_max_norm() -> None:
    p = nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 3.0)  # norm 6
    assert clip_grad_norm(p, 3.0).item() == pytest.approx(6.0)
    torch.testing.assert_close(p.grad, torch.full((4,), 1.5), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(p, -1.0)
    assert grad_norm([nn.Parameter(torch.ones(2))]).item() == 0  # no gradients yet


def _model_and_data(seed: int = 0) -> tuple[LSTM, Tensor, Tensor]:
    torch.manual_seed(seed)
    model = LSTM(3, 5)
    x = torch.randn(8, 2, 3, requires_grad=True)  # (T, B, I); its .grad shows how far gradients reach
    return model, x, torch.zeros(8, 2, 5)


def test_truncated_bptt_detaches_between_chunks() -> None:
    model, x, y = _model_and_data()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # steps change nothing: runs are comparable
    result = truncated_bptt(model, x, y, _sum_loss, frozen, k=4)
    assert len(result.losses) == len(result.grad_norms) == 2
    # The parameters' gradients are chunk 2's alone (zeroed between chunks, no flow from chunk 1).
    reference = LSTM(3, 5)
    reference.load_state_dict(model.state_dict())
    reference(x.detach()[4:], detach_state(model(x.detach()[:4])[1]))[0].sum().backward()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    # Chunk 1's inputs got only chunk 1's loss gradient: chunk 2's backward stopped at its start.
    x1 = x.detach()[:4].clone().requires_grad_()
    model(x1)[0].sum().backward()
    torch.testing.assert_close(x.grad[:4], x1.grad)
    # Without truncation (k >= T), chunk 2's loss does reach those inputs.
    x_full = x.detach().clone().requires_grad_()
    full = truncated_bptt(model, x_full, y, _sum_loss, frozen, k=100)
    assert len(full.losses) == 1
    assert not torch.allclose(x_full.grad[:4], x1.grad, atol=1e-4)
    # The state is carried across chunks (values continue), only its history is cut.
    _, (h_n, c_n) = model(x.detach())
    torch.testing.assert_close(result.state[0], h_n)
    torch.testing.assert_close(result.state[1], c_n)
    assert not result.state[0].requires_grad
    assert sum(result.losses) == pytest.approx(full.losses[0], rel=1e-5)


def test_full_bptt_is_one_ordinary_backward_and_clipping_applies() -> None:
    model, x, y = _model_and_data()
    reference = LSTM(3, 5)
    reference.load_state_dict(model.state_dict())
    reference(x.detach())[0].sum().backward()
    ref_grads = [p.grad.clone() for p in reference.parameters()]
    result = truncated_bptt(model, x.detach(), y, _sum_loss, torch.optim.SGD(model.parameters(), lr=0.0),
                            k=8, max_norm=0.1)
    total = grad_norm(reference.parameters())
    assert result.grad_norms[0] == pytest.approx(float(total), rel=1e-5)  # the norm before clipping
    scale = 0.1 / (float(total) + 1e-6)
    for p, g in zip(model.parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, g * scale)


def test_truncated_bptt_trains_with_state_and_batch_first() -> None:
    torch.manual_seed(0)
    rnn, head = RNN(1, 12, batch_first=True), nn.Linear(12, 1)

    def model(x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        out, state = rnn(x, state)
        return head(out), state

    t = torch.arange(60.0)
    x = torch.sin(t * 0.3).view(1, 60, 1).repeat(4, 1, 1)  # (B, T, 1)
    y = torch.sin((t + 1) * 0.3).view(1, 60, 1).repeat(4, 1, 1)  # predict the next value
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.02)
    first = truncated_bptt(model, x, y, nn.functional.mse_loss, opt, k=10, time_dim=1, max_norm=1.0)
    for _ in range(15):
        last = truncated_bptt(model, x, y, nn.functional.mse_loss, opt, k=10, time_dim=1, max_norm=1.0)
    assert len(first.losses) == 6
    assert sum(last.losses) < sum(first.losses) / 5


def test_truncated_bptt_bad_input() -> None:
    model, x, y = _model_and_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="k must be"):
        truncated_bptt(model, x, y, _sum_loss, opt, k=0)
    with pytest.raises(ValueError, match="targets 7"):
        truncated_bptt(model, x, y[:7], _sum_loss, opt, k=4)


def test_detach_state() -> None:
    h = torch.ones(2, requires_grad=True) * 2
    assert detach_state(None) is None
    assert not detach_state(h).requires_grad  # type: ignore[union-attr]
    pair = detach_state((h, h))
    assert isinstance(pair, tuple) and not any(s.requires_grad for s in pair)


def test_unroll_matches_module() -> None:
    torch.manual_seed(0)
    lstm = LSTM(3, 4)
    x = torch.randn(6, 2, 3)
    states = unroll(lstm.cell(), x)
    out, (h_n, c_n) = lstm(x)
    torch.testing.assert_close(torch.stack([s[0] for s in states]), out)
    torch.testing.assert_close(states[-1][1], c_n[0])
    rnn_states = unroll(RNNCell(3, 4), x)
    assert len(rnn_states) == 6 and len(rnn_states[0]) == 1
    with pytest.raises(ValueError, match="unroll"):
        unroll(RNNCell(3, 4), torch.randn(3))


@pytest.mark.parametrize("cell_cls", [RNNCell, LSTMCell])
def test_gradient_norms_match_restarting_from_each_state(cell_cls: type[nn.Module]) -> None:
    """Naive reference: dL/dh_t by re-running steps t+1.. from a leaf copy of the state at t."""
    torch.manual_seed(0)
    cell = cell_cls(3, 4).double()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    readout = torch.randn(4, dtype=torch.float64)

    def loss_fn(h: Tensor) -> Tensor:
        return (h @ readout).sum()

    norms = gradient_norms_through_time(cell, x, loss_fn)
    assert norms.h.shape == (7,) and (norms.c is None) == (cell_cls is RNNCell)
    states = unroll(cell, x)
    for t in range(7):
        leaf = tuple(s.detach().clone().requires_grad_() for s in states[t])
        rest = unroll(cell, x[t + 1:], leaf if len(leaf) == 2 else leaf[0]) if t < 6 else [leaf]
        (g,) = torch.autograd.grad(loss_fn(rest[-1][0]), leaf[0])
        assert norms.h[t].item() == pytest.approx(g.norm().item(), rel=1e-9)
    if norms.c is not None:
        assert norms.c[-1] > 0


def test_vanishing_gradient_rnn_vs_lstm() -> None:
    norms = rnn_vs_lstm_gradient_norms(steps=120)
    rnn, lstm = norms["RNN (tanh)"], norms["LSTM (forget bias 1)"]
    assert rnn.h.shape == lstm.h.shape == (120,)
    rnn_ratio = (rnn.h[0] / rnn.h[-1]).item()
    lstm_ratio = (lstm.h[0] / lstm.h[-1]).item()
    assert 0 < rnn_ratio < 1e-3  # the RNN's gradient vanishes over 120 steps ...
    assert lstm_ratio > 1e6 * rnn_ratio  # ... the LSTM's (forget gate ~ sigmoid(1)) far less
    assert lstm.c is not None and (lstm.c[0] / lstm.c[-1]).item() > 1e6 * rnn_ratio
    # The forget-gate bias is what keeps the gradient: larger bias, slower decay.
    ratios = [list(rnn_vs_lstm_gradient_norms(steps=120, forget_bias=fb).values())[1].h for fb in (0.0, 3.0)]
    assert (ratios[0][0] / ratios[0][-1]).item() < lstm_ratio / 1e6
    assert (ratios[1][0] / ratios[1][-1]).item() > lstm_ratio * 1e6


def test_gradient_norms_accept_one_layer_modules_only() -> None:
    torch.manual_seed(0)
    lstm = LSTM(3, 4)
    x = torch.randn(5, 2, 3)

    def loss_fn(h: Tensor) -> Tensor:
        return h.sum()

    a, b = gradient_norms_through_time(lstm, x, loss_fn), gradient_norms_through_time(lstm.cell(), x, loss_fn)
    torch.testing.assert_close(a.h, b.h)
    with pytest.raises(ValueError, match="1-layer"):
        gradient_norms_through_time(LSTM(3, 4, num_layers=2), x, loss_fn)
    with pytest.raises(ValueError, match="expected an RNN/LSTM cell"):
        gradient_norms_through_time(nn.Linear(3, 4), x, loss_fn)


def test_plot_gradient_norms_writes_png(tmp_path: object) -> None:
    norms: dict[str, GradientNorms | Tensor] = dict(rnn_vs_lstm_gradient_norms(steps=110, hidden_size=8))
    norms["raw tensor"] = torch.logspace(-5, 0, 110)
    path = plot_gradient_norms(norms, tmp_path / "sub" / "norms.png")  # type: ignore[operator]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
