"""RNN / LSTM / cells: parity with torch.nn (weights, outputs, states, gradients), packing, lengths,
dropout, gradcheck, bad input, and a seeded overfit run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from structpred.layers import LSTM, RNN, LSTMCell, RNNCell

T, B, IN, H = 5, 3, 4, 6  # steps, batch, input features, hidden
TOL = {"rtol": 1e-5, "atol": 1e-5}
MODES = ["tanh", "relu", "lstm"]


def _pair(mode: str, **kw: object) -> tuple[nn.Module, nn.Module]:
    """(ours, torch's) with torch's random weights loaded strictly into ours."""
    if mode == "lstm":
        peer: nn.Module = nn.LSTM(IN, H, **kw)
        ours: nn.Module = LSTM(IN, H, **kw)  # type: ignore[arg-type]
    else:
        peer = nn.RNN(IN, H, nonlinearity=mode, **kw)
        ours = RNN(IN, H, nonlinearity=mode, **kw)  # type: ignore[arg-type]
    ours.load_state_dict(peer.state_dict(), strict=True)
    return ours, peer


def _states(result: tuple[object, object]) -> list[Tensor]:
    """``[h_n]`` or ``[h_n, c_n]`` of a module's return value."""
    s = result[1]
    return [s] if isinstance(s, Tensor) else list(s)


def _loss(result: tuple[object, object], seed: int = 1) -> Tensor:
    """A random linear functional of the output and every final state, so every gradient path counts."""
    out = result[0]
    out = out.data if isinstance(out, PackedSequence) else out
    g = torch.Generator().manual_seed(seed)
    terms = [out, *_states(result)]
    return sum((t * torch.randn(t.shape, generator=g)).sum() for t in terms)  # type: ignore[return-value]


def _assert_grads_close(ours: nn.Module, peer: nn.Module) -> None:
    peer_params = dict(peer.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, peer_params[name].grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")


def test_public_import() -> None:
    import structpred.layers as layers

    assert {"RNN", "LSTM", "RNNCell", "LSTMCell", "MultiScaleRoIAlign"} <= set(layers.__all__)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_state_dict_names_shapes_and_init_match_torch(
    mode: str, num_layers: int, bidirectional: bool
) -> None:
    kw = {"num_layers": num_layers, "bidirectional": bidirectional}
    torch.manual_seed(0)
    ours = LSTM(IN, H, **kw) if mode == "lstm" else RNN(IN, H, nonlinearity=mode, **kw)  # type: ignore[arg-type]
    peer = nn.LSTM(IN, H, **kw) if mode == "lstm" else nn.RNN(IN, H, nonlinearity=mode, **kw)
    ours_sd, peer_sd = ours.state_dict(), peer.state_dict()
    assert list(ours_sd) == list(peer_sd)  # same names in the same order
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in peer_sd.items()}
    peer.load_state_dict(ours_sd, strict=True)  # and back
    bound = 1 / math.sqrt(H)
    for name, p in ours.named_parameters():
        assert p.abs().max() <= bound, name
        assert p.std() > 0, name  # not zeros or a constant
    # Uniform on [-b, b] has std b / sqrt(3); a bias alone has too few values to test that.
    every = torch.cat([p.detach().flatten() for p in ours.parameters()])
    assert 0.5 * bound < float(every.std()) < 0.65 * bound


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_torch(
    mode: str, num_layers: int, bidirectional: bool, batch_first: bool, bias: bool, with_h0: bool
) -> None:
    torch.manual_seed(0)
    ours, peer = _pair(mode, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                       bias=bias)
    x = torch.randn((B, T, IN) if batch_first else (T, B, IN))
    x_ours, x_peer = x.clone().requires_grad_(), x.clone().requires_grad_()
    D = 2 if bidirectional else 1
    hx: object = None
    if with_h0:
        h0 = torch.randn(num_layers * D, B, H)
        hx = (h0, torch.randn(num_layers * D, B, H)) if mode == "lstm" else h0
    r_ours, r_peer = ours(x_ours, hx), peer(x_peer, hx)
    torch.testing.assert_close(r_ours[0], r_peer[0], **TOL)
    assert r_ours[0].shape == ((B, T, D * H) if batch_first else (T, B, D * H))
    for a, b in zip(_states(r_ours), _states(r_peer), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    _loss(r_ours).backward()
    _loss(r_peer).backward()
    _assert_grads_close(ours, peer)
    torch.testing.assert_close(x_ours.grad, x_peer.grad, **TOL)


@pytest.mark.parametrize("mode", MODES)
def test_unbatched_input_matches_torch(mode: str) -> None:
    torch.manual_seed(0)
    ours, peer = _pair(mode, num_layers=2, bidirectional=True)
    x = torch.randn(T, IN)
    h0 = torch.randn(4, H)
    hx = (h0, torch.randn(4, H)) if mode == "lstm" else h0
    r_ours, r_peer = ours(x, hx), peer(x, hx)
    torch.testing.assert_close(r_ours[0], r_peer[0], **TOL)
    for a, b in zip(_states(r_ours), _states(r_peer), strict=True):
        assert a.shape == (4, H)
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_cells_match_torch(mode: str, batched: bool, with_hx: bool) -> None:
    torch.manual_seed(0)
    if mode == "lstm":
        peer: nn.Module = nn.LSTMCell(IN, H)
        ours: nn.Module = LSTMCell(IN, H)
    else:
        peer, ours = nn.RNNCell(IN, H, nonlinearity=mode), RNNCell(IN, H, nonlinearity=mode)
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict())
    shape = (B, H) if batched else (H,)
    x = torch.randn((B, IN) if batched else (IN,))
    hx: object = None
    if with_hx:
        hx = (torch.randn(shape), torch.randn(shape)) if mode == "lstm" else torch.randn(shape)
    a, b = ours(x, hx), peer(x, hx)
    a, b = (a, b) if mode == "lstm" else ((a,), (b,))
    for u, v in zip(a, b, strict=True):
        assert u.shape == shape
        torch.testing.assert_close(u, v, **TOL)
    sum(u.sum() * (k + 1) for k, u in enumerate(a)).backward()
    sum(v.sum() * (k + 1) for k, v in enumerate(b)).backward()
    _assert_grads_close(ours, peer)


def _padded_batch(seed: int = 0, lengths: tuple[int, ...] = (3, 5, 1, 4)) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    x = torch.randn(int(lens.max()), len(lengths), IN, generator=g)  # (T, B, I)
    return x, lens


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_sequence_matches_torch(mode: str, enforce_sorted: bool, with_hx: bool) -> None:
    torch.manual_seed(0)
    ours, peer = _pair(mode, num_layers=2, bidirectional=True)
    x, lens = _padded_batch(lengths=(5, 4, 3, 1) if enforce_sorted else (3, 5, 1, 4))
    packed = pack_padded_sequence(x, lens, enforce_sorted=enforce_sorted)
    hx: object = None
    if with_hx:  # an unsorted batch's hx is in the caller's order: it must be permuted like the data
        h0 = torch.randn(4, len(lens), H)
        hx = (h0, torch.randn(4, len(lens), H)) if mode == "lstm" else h0
    r_ours, r_peer = ours(packed, hx), peer(packed, hx)
    assert isinstance(r_ours[0], PackedSequence)
    torch.testing.assert_close(r_ours[0].data, r_peer[0].data, **TOL)
    assert torch.equal(r_ours[0].batch_sizes, r_peer[0].batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        a, b = getattr(r_ours[0], name), getattr(r_peer[0], name)
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(_states(r_ours), _states(r_peer), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    _loss(r_ours).backward()
    _loss(r_peer).backward()
    _assert_grads_close(ours, peer)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_equal_packing_and_per_sequence_runs(mode: str, batch_first: bool) -> None:
    torch.manual_seed(0)
    ours, peer = _pair(mode, num_layers=2, bidirectional=True, batch_first=batch_first)
    x, lens = _padded_batch()  # unsorted lengths, max = T
    x = x.transpose(0, 1) if batch_first else x  # (T, B, I) -> (B, T, I)
    x = torch.cat([x, torch.full_like(x, float("nan"))], 1 if batch_first else 0)  # NaN padding
    r_ours = ours(x, lengths=lens.tolist())
    out, time_dim = r_ours[0], 1 if batch_first else 0
    assert out.shape[time_dim] == x.shape[time_dim] and not out.isnan().any()  # padding never read
    # Against torch's packed run ...
    x_valid = x.narrow(time_dim, 0, int(lens.max()))
    r_peer = peer(pack_padded_sequence(x_valid, lens, batch_first=batch_first, enforce_sorted=False))
    padded, _ = pad_packed_sequence(r_peer[0], batch_first=batch_first, total_length=x.shape[time_dim])
    torch.testing.assert_close(out, padded, **TOL)  # including zeros past each length
    for a, b in zip(_states(r_ours), _states(r_peer), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    # ... and against running each sequence alone on its valid steps (a naive reference).
    for b_i, n in enumerate(lens.tolist()):
        seq = x.narrow(time_dim, 0, n).select(1 - time_dim, b_i).unsqueeze(1 - time_dim)  # (n, 1, I)
        alone = ours(seq)
        torch.testing.assert_close(out.select(1 - time_dim, b_i).narrow(0, 0, n),
                                   alone[0].select(1 - time_dim, 0), **TOL)
        for a, s in zip(_states(r_ours), _states(alone), strict=True):
            torch.testing.assert_close(a[:, b_i], s[:, 0], **TOL)


def test_lengths_tensor_full_length_is_plain_run() -> None:
    torch.manual_seed(0)
    m = LSTM(IN, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, IN)
    a, b = m(x, lengths=torch.full((B,), T)), m(x)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_dropout_only_between_layers_and_only_in_training(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    plain, dropped = cls(IN, H, num_layers=2), cls(IN, H, num_layers=2, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(T, B, IN)
    r_plain, r_eval = plain(x), dropped.eval()(x)
    torch.testing.assert_close(r_eval[0], r_plain[0], rtol=0, atol=0)
    r_train = dropped.train()(x)
    assert not torch.allclose(r_train[0], r_eval[0], atol=1e-3)  # dropout applied in training
    s_train, s_eval = _states(r_train), _states(r_eval)
    torch.testing.assert_close(s_train[0][0], s_eval[0][0])  # layer 0 reads undropped input
    assert not torch.allclose(s_train[0][1], s_eval[0][1], atol=1e-3)  # layer 1 reads dropped input
    with pytest.warns(UserWarning, match="num_layers=1"):
        single = cls(IN, H, dropout=0.5)
    single.load_state_dict({k: v for k, v in plain.state_dict().items() if "_l0" in k})
    torch.testing.assert_close(single.train()(x)[0], single.eval()(x)[0], rtol=0, atol=0)


def test_dropout_draws_like_torch() -> None:
    """Same seed -> the same dropout masks as torch.nn.LSTM (both drop each layer's output)."""
    torch.manual_seed(0)
    ours, peer = _pair("lstm", num_layers=3, dropout=0.3)
    ours.train()
    peer.train()
    x = torch.randn(T, B, IN)
    torch.manual_seed(5)
    a = ours(x)
    torch.manual_seed(5)
    b = peer(x)
    torch.testing.assert_close(a[0], b[0], **TOL)


@pytest.mark.parametrize("mode", MODES)
def test_cell_view_shares_parameters(mode: str) -> None:
    torch.manual_seed(0)
    m = LSTM(IN, H, 2, bidirectional=True) if mode == "lstm" else RNN(IN, H, 2, mode, bidirectional=True)
    x = torch.randn(T, B, IN)
    out = m(x)[0]
    cell = m.cell(0, reverse=True)
    assert cell.weight_ih is m.weight_ih_l0_reverse
    state: object = None
    for t in reversed(range(T)):  # the reverse direction of layer 0, step by step
        state = cell(x[t], state)
    h = state[0] if isinstance(state, tuple) else state
    torch.testing.assert_close(h, _states(m(x))[0][1], **TOL)  # h_n of (layer 0, reverse)
    assert m.cell(1).weight_ih.shape == (m.weight_ih_l1.shape)  # layer 1 reads D*H features
    assert out.shape == (T, B, 2 * H)


def test_no_torch_recurrent_kernels_in_the_compute_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch's own RNN kernel was called")

    for name in ("lstm", "rnn_tanh", "rnn_relu", "lstm_cell", "rnn_tanh_cell", "rnn_relu_cell"):
        monkeypatch.setattr(torch._VF, name, forbidden)
    torch.manual_seed(0)
    x, lens = _padded_batch()
    for m in (LSTM(IN, H, 2, bidirectional=True), RNN(IN, H, 2, "relu", bidirectional=True)):
        m(x)[0].sum().backward()
        m(pack_padded_sequence(x, lens, enforce_sorted=False))
    LSTMCell(IN, H)(x[0])
    RNNCell(IN, H)(x[0])


def test_gradcheck_cells_and_module() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    lstm_cell = LSTMCell(3, 2).double()
    rnn_cell = RNNCell(3, 2).double()
    assert torch.autograd.gradcheck(lambda x, h, c: lstm_cell(x, (h, c)), (x, h, c))
    assert torch.autograd.gradcheck(lambda x, h: rnn_cell(x, h), (x, h))
    lstm = LSTM(3, 2, num_layers=2, bidirectional=True).double()
    xs = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    weights = tuple(p for p in lstm.parameters())[:4]  # layer 0's forward direction

    def run(xs: Tensor, *_: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out, (h_n, c_n) = lstm(xs, lengths=[4, 2])
        return out, h_n, c_n

    assert torch.autograd.gradcheck(run, (xs, *weights))


def test_overfit_tiny_sequence_task() -> None:
    """Echo with delay 2 (y_t = x_{t-2}): needs memory; loss must fall by > 20x in 150 Adam steps."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 16, 1, generator=g)  # (T, B, 1)
    y = torch.cat([torch.zeros(2, 16, 1), x[:-2]])  # (T, B, 1)
    lstm, head = LSTM(1, 16), nn.Linear(16, 1)  # head = the output weights V
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.02)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.mse_loss(head(lstm(x)[0]), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m(torch.randn(T, B, IN, 2)), "rank 4"),
        (lambda m: m(torch.randn(T)), "rank 1"),
        (lambda m: m(torch.randn(T, B, IN + 1)), "expected 4 input features, got 5"),
        (lambda m: m(torch.randn(0, B, IN)), "at least one step"),
        (lambda m: m(torch.randint(0, 3, (T, B, IN))), "floating point"),
        (lambda m: m(torch.randn(T, B, IN), lengths=[T] * (B + 1)), "one length per sequence"),
        (lambda m: m(torch.randn(T, B, IN), lengths=[T, 0, 1]), r"lie in \[1, T=5\]"),
        (lambda m: m(torch.randn(T, B, IN), lengths=[T, T + 1, 1]), r"lie in \[1, T=5\]"),
        (lambda m: m(torch.randn(T, B, IN), lengths=torch.tensor([1.0, 2.0, 3.0])), "integers"),
        (lambda m: m(torch.randn(T, IN), lengths=[T]), "batched input"),
        (lambda m: m(pack_padded_sequence(torch.randn(T, B, IN), [5, 4, 2]), lengths=[5, 4, 2]),
         "not with a PackedSequence"),
        (lambda m: m(PackedSequence(torch.randn(6, IN), torch.tensor([1, 2, 3]))), "non-increasing"),
        (lambda m: m(PackedSequence(torch.randn(7, IN), torch.tensor([3, 2, 1]))), "data has 7 rows"),
        (lambda m: m(torch.randn(T, B, IN), torch.randn(1, B, H)), r"initial state must be .*\(2, 3, 6\)"),
        (lambda m: m(torch.randn(T, B, IN), torch.randn(2, B + 1, H)), "initial state"),
        (lambda m: m(torch.randn(T, IN), torch.randn(2, 1, H)), r"\(2, 6\)"),
    ],
)
@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_bad_input_raises(cls: type[nn.Module], call: object, match: str) -> None:
    m = cls(IN, H, num_layers=2)
    if cls is LSTM:  # give the LSTM its (h0, c0) pair where the case passes an h0
        orig = m.forward

        def forward(x: object, hx: Tensor | None = None, **kw: object) -> object:
            return orig(x, None if hx is None else (hx, hx), **kw)

        m.forward = forward
    with pytest.raises(ValueError, match=match):
        call(m)  # type: ignore[operator]


def test_bad_construction_and_state_raise() -> None:
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(IN, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(IN, H, nonlinearity="gelu")
    with pytest.raises(ValueError, match="num_layers"):
        LSTM(IN, H, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        LSTM(IN, H, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="positive"):
        LSTM(0, H)
    lstm = LSTM(IN, H)
    with pytest.raises(ValueError, match="pair"):
        lstm(torch.randn(T, B, IN), torch.zeros(1, B, H))
    with pytest.raises(ValueError, match="initial state"):
        lstm(torch.randn(T, B, IN), (torch.zeros(1, B, H), torch.zeros(1, B, H + 1)))  # bad c0
    with pytest.raises(ValueError, match=r"input must be \(B, 4\)"):
        LSTMCell(IN, H)(torch.randn(B, IN + 1))
    with pytest.raises(ValueError, match=r"state must be \(3, 6\)"):
        RNNCell(IN, H)(torch.randn(B, IN), torch.randn(B, H + 1))
    with pytest.raises(ValueError, match="no layer 1"):
        lstm.cell(1)
    with pytest.raises(ValueError, match="reverse=True"):
        lstm.cell(0, reverse=True)
