"""Elman RNN and LSTM written out in PyTorch: cells, multi-layer (bi)directional modules.

Drop-ins for ``torch.nn.RNN`` / ``torch.nn.LSTM`` / ``torch.nn.RNNCell`` / ``torch.nn.LSTMCell``:
same constructor arguments, parameter names, shapes and initialisation (uniform ±1/sqrt(H)), so a
torch state dict loads strictly; same forward signature and return values, ``PackedSequence`` in
gives ``PackedSequence`` out. The compute path is plain tensor ops (no ``torch._VF``).

Lecture notation: an RNN has input weights U, memory (recurrent) weights W and output weights V,
``h_t = act(U x_t + W h_{t-1} + b)``, ``y_t = V h_t + c``. Here ``U = weight_ih_l{k}`` and
``W = weight_hh_l{k}`` (two biases, ``bias_ih`` + ``bias_hh``, as in torch). The modules return the
hidden states ``h_t``, like torch; V is the output projection the user puts on top (an
``nn.Linear(D*H, K)``).

LSTM (gate order i, f, g, o in the stacked weights, as torch)::

    i, f, o = sigmoid(.), g = tanh(.)   of   x_t U^T + h_{t-1} W^T + b   (chunked in 4)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Shape shorthand: T time steps, B batch, I input features, H hidden size, L layers, D directions
(2 if bidirectional), G gates (1 for RNN, 4 for LSTM).

Convention: variable-length batches come either as a ``PackedSequence`` or as a padded tensor with
``lengths=`` (any order). A sequence's state is not updated past its length, its outputs there are
zero, its final state is the one at its last valid step, and the reverse direction starts at its
last valid step from ``h0``.

Speed: per layer and direction the input projection ``x U^T + b`` is one matmul over all T*B rows;
each step is then one ``addmm`` with W (``[B, H] x [H, G*H]``) and the elementwise gates. The LSTM
runs :func:`structpred.layers.lstm_function.lstm_scan`: in-place steps into preallocated buffers,
and under autograd a hand-written BPTT backward (one GEMM per step, weight gradients in one GEMM).

Per-step states (for BPTT diagnostics): ``module.cell(layer, reverse)`` is a cell sharing that
layer's parameters; ``structpred.layers.bptt.unroll`` runs a cell and keeps every ``h_t`` (``c_t``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .lstm_function import lstm_scan
from .rnn_pack import lengths_tensor as _lengths_tensor
from .rnn_pack import unpack as _unpack

State = tuple[Tensor, ...]  # (h,) for RNN, (h, c) for LSTM; each (B, H)
StepFn = Callable[[Tensor, State, Tensor], State]


def _tanh_step(xw: Tensor, state: State, w_hh_t: Tensor) -> State:
    return (torch.tanh(torch.addmm(xw, state[0], w_hh_t)),)  # (B, H)


def _relu_step(xw: Tensor, state: State, w_hh_t: Tensor) -> State:
    return (torch.relu(torch.addmm(xw, state[0], w_hh_t)),)  # (B, H)


def _lstm_step(xw: Tensor, state: State, w_hh_t: Tensor) -> State:
    h, c = state
    gates = torch.addmm(xw, h, w_hh_t)  # (B, 4H)
    i, f, g, o = gates.chunk(4, 1)  # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


# mode -> (step function, G)
_STEPS: dict[str, tuple[StepFn, int]] = {
    "tanh": (_tanh_step, 1), "relu": (_relu_step, 1), "lstm": (_lstm_step, 4),
}


def _input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """``x U^T + b_ih + b_hh`` for every row at once: ``(..., I) -> (..., G*H)``."""
    x2 = x.reshape(-1, x.shape[-1])  # (T, B, I) -> (T*B, I)
    if b_ih is None or b_hh is None:
        xw = torch.mm(x2, w_ih.t())  # (T*B, G*H)
    else:
        xw = torch.addmm(b_ih + b_hh, x2, w_ih.t())  # (T*B, G*H)
    return xw.view(*x.shape[:-1], w_ih.shape[0])  # (T*B, G*H) -> (T, B, G*H)


def _scan(step: StepFn, xw: Tensor, state: State, w_hh: Tensor, valid: Tensor | None, reverse: bool
          ) -> tuple[Tensor, State]:
    """Run ``step`` over ``xw (T, B, G*H)``; ``valid (T, B, 1)`` bool freezes finished sequences.

    Returns the outputs ``(T, B, H)`` (not yet zeroed past the lengths) and the final state.
    """
    w_hh_t = w_hh.t()  # (G*H, H) -> (H, G*H), a view: no per-step transpose
    xs = xw.unbind(0)  # T x (B, G*H)
    order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
    masks = valid.unbind(0) if valid is not None else None  # T x (B, 1)
    outs: list[Tensor] = []
    for t in order:
        new = step(xs[t], state, w_hh_t)
        state = new if masks is None else tuple(
            torch.where(masks[t], n, s) for n, s in zip(new, state, strict=True))
        outs.append(state[0])
    if reverse:
        outs.reverse()
    return torch.stack(outs), state  # (T, B, H)


def _uniform_init(module: nn.Module, hidden_size: int) -> None:
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


def _check_sizes(input_size: int, hidden_size: int) -> None:
    if input_size <= 0 or hidden_size <= 0:
        raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")


class _CellBase(nn.Module):
    """One step of an RNN/LSTM: parameters ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, biases."""

    mode: str

    def __init__(self, input_size: int, hidden_size: int, bias: bool, mode: str) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size, self.hidden_size, self.bias, self.mode = input_size, hidden_size, bias, mode
        G = _STEPS[mode][1]
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G * hidden_size, hidden_size))
        self.bias_ih: nn.Parameter | None = nn.Parameter(torch.empty(G * hidden_size)) if bias else None
        self.bias_hh: nn.Parameter | None = nn.Parameter(torch.empty(G * hidden_size)) if bias else None
        _uniform_init(self, hidden_size)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, mode={self.mode!r}"

    def _step(self, x: Tensor, hx: State | None) -> State:
        """``x (B, I)`` or ``(I,)``, states ``(B, H)`` / ``(H,)`` -> the next states."""
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input must be (B, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(x.shape)}")
        batched = x.dim() == 2
        x2 = x if batched else x.unsqueeze(0)  # (I,) -> (1, I)
        B, H = x2.shape[0], self.hidden_size
        n = 2 if self.mode == "lstm" else 1  # states: (h,) or (h, c)
        if hx is None:
            states: State = tuple(x2.new_zeros(B, H) for _ in range(n))
        else:
            want = (B, H) if batched else (H,)
            for s in hx:
                if tuple(s.shape) != want:
                    raise ValueError(f"{type(self).__name__}: state must be {want}, got {tuple(s.shape)}")
            states = tuple(s if batched else s.unsqueeze(0) for s in hx)  # (H,) -> (1, H)
        xw = _input_projection(x2, self.weight_ih, self.bias_ih, self.bias_hh)  # (B, G*H)
        out = _STEPS[self.mode][0](xw, states, self.weight_hh.t())
        return out if batched else tuple(s.squeeze(0) for s in out)


class RNNCell(_CellBase):
    """``h' = act(x U^T + b_ih + h W^T + b_hh)``, act tanh or relu; like ``torch.nn.RNNCell``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, nonlinearity)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """``input (B, I)`` or ``(I,)``, ``hx (B, H)`` (zeros if None) -> ``h' (B, H)``."""
        return self._step(input, None if hx is None else (hx,))[0]


class LSTMCell(_CellBase):
    """One LSTM step (gates i, f, g, o); like ``torch.nn.LSTMCell``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias, "lstm")

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``input (B, I)``, ``hx = (h, c)`` each ``(B, H)`` (zeros if None) -> ``(h', c')``."""
        h, c = self._step(input, hx)
        return h, c


class _RecurrentBase(nn.Module):
    """Stacked (bi)directional recurrence; parameters named like torch (``weight_ih_l0_reverse`` ...)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, dropout: float, bidirectional: bool) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must lie in [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout acts between layers only: with num_layers=1 it does nothing", stacklevel=3)
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers = num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        D, G = (2 if bidirectional else 1), _STEPS[mode][1]
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else D * hidden_size
            for sfx in ("", "_reverse")[:D]:
                shapes: dict[str, tuple[int, ...]] = {
                    "weight_ih": (G * hidden_size, fan_in), "weight_hh": (G * hidden_size, hidden_size)}
                if bias:
                    shapes.update(bias_ih=(G * hidden_size,), bias_hh=(G * hidden_size,))
                for kind, shape in shapes.items():  # torch's order: w_ih, w_hh, b_ih, b_hh
                    self.register_parameter(f"{kind}_l{layer}{sfx}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter uniform in ±1/sqrt(H), as torch."""
        _uniform_init(self, self.hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, kept so code written for ``torch.nn.LSTM`` (which calls it for cuDNN) runs unchanged."""

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}")

    def _weights(self, layer: int, reverse: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        sfx = f"l{layer}" + ("_reverse" if reverse else "")
        w_ih, w_hh = getattr(self, f"weight_ih_{sfx}"), getattr(self, f"weight_hh_{sfx}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_{sfx}"), getattr(self, f"bias_hh_{sfx}")

    def cell(self, layer: int = 0, reverse: bool = False) -> RNNCell | LSTMCell:
        """A cell that *shares* this layer/direction's parameters (for step-by-step use, diagnostics)."""
        if not 0 <= layer < self.num_layers or (reverse and not self.bidirectional):
            raise ValueError(f"no layer {layer} (reverse={reverse}) in {self.num_layers} layers, "
                             f"bidirectional={self.bidirectional}")
        fan_in = self.input_size if layer == 0 else (2 if self.bidirectional else 1) * self.hidden_size
        cell: RNNCell | LSTMCell = (LSTMCell(fan_in, self.hidden_size, self.bias) if self.mode == "lstm"
                                    else RNNCell(fan_in, self.hidden_size, self.bias, self.mode))
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for name, p in zip(names, self._weights(layer, reverse), strict=True):
            if p is not None:
                setattr(cell, name, p)
        return cell

    def _run(self, input: Tensor | PackedSequence, hx: State | None,
             lengths: Tensor | Sequence[int] | None) -> tuple[Tensor | PackedSequence, State]:
        """Shared forward: validate, run every layer and direction, repack. States ``(L*D, B, H)``."""
        name, n_states = type(self).__name__, 2 if self.mode == "lstm" else 1
        lens: Tensor | None
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(f"{name}: pass lengths= with a padded tensor, not with a PackedSequence")
            x, lens, index = _unpack(input)  # (T, B, I), in sorted order
            if hx is not None and input.sorted_indices is not None:
                hx = tuple(s.index_select(1, input.sorted_indices) for s in hx)  # states into sorted order
            batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: input must be (T, B, I), (B, T, I) with batch_first, or unbatched "
                                 f"(T, I); got rank {input.dim()} {tuple(input.shape)}")
            batched = input.dim() == 3
            if not batched and lengths is not None:
                raise ValueError(f"{name}: lengths= needs a batched input, got {tuple(input.shape)}")
            x = input.unsqueeze(1) if not batched else input.transpose(0, 1) if self.batch_first else input
            # x: (T, I) -> (T, 1, I) or (B, T, I) -> (T, B, I)
            lens = None if lengths is None else _lengths_tensor(lengths, x.shape[1], x.shape[0])
        T, B, I_in = x.shape
        if T == 0 or B == 0:
            raise ValueError(f"{name}: need at least one step and one sequence, got T={T}, B={B}")
        if I_in != self.input_size:
            raise ValueError(f"{name}: expected {self.input_size} input features, got {I_in}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: input must be floating point, got {x.dtype}")
        D, H = (2 if self.bidirectional else 1), self.hidden_size
        want = (self.num_layers * D, B, H) if batched else (self.num_layers * D, H)
        if hx is None:
            states = tuple(x.new_zeros(self.num_layers * D, B, H) for _ in range(n_states))
        else:
            for s in hx:
                if tuple(s.shape) != want:
                    raise ValueError(f"{name}: initial state must be (L*D, B, H) = {want}, "
                                     f"got {tuple(s.shape)}")
            states = hx if batched else tuple(s.unsqueeze(1) for s in hx)  # (L*D, H) -> (L*D, 1, H)
        valid = None
        if lens is not None and int(lens.min()) < T:
            valid = (torch.arange(T).unsqueeze(1) < lens).unsqueeze(2).to(x.device)  # (T, B) -> (T, B, 1)
        step = _STEPS[self.mode][0]
        finals: list[State] = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d == 1)
                init = tuple(s[layer * D + d] for s in states)
                if self.mode == "lstm":  # the hand-written recurrence and BPTT (layers/lstm_function.py)
                    h_0, c_0 = init
                    out, *last = lstm_scan(layer_in, h_0, c_0, w_ih, w_hh, b_ih, b_hh, valid, d == 1)
                    final: State = tuple(last)
                else:
                    xw = _input_projection(layer_in, w_ih, b_ih, b_hh)  # (T, B, G*H)
                    out, final = _scan(step, xw, init, w_hh, valid, d == 1)
                outs.append(out)
                finals.append(final)
            layer_in = outs[0] if D == 1 else torch.cat(outs, 2)  # D x (T, B, H) -> (T, B, D*H)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        output = layer_in if valid is None else layer_in * valid  # zero past each length
        h_n = tuple(torch.stack([f[k] for f in finals]) for k in range(n_states))  # (L*D, B, H)
        if isinstance(input, PackedSequence):
            out_packed = PackedSequence(output.reshape(T * B, D * H)[index], input.batch_sizes,
                                        input.sorted_indices, input.unsorted_indices)  # (N, D*H)
            if input.unsorted_indices is not None:
                h_n = tuple(s.index_select(1, input.unsorted_indices) for s in h_n)  # back to input order
            return out_packed, h_n
        if not batched:
            return output.squeeze(1), tuple(s.squeeze(1) for s in h_n)  # (T, 1, D*H) -> (T, D*H)
        return (output.transpose(0, 1) if self.batch_first else output), h_n  # (T, B, D*H) -> (B, T, D*H)


class RNN(_RecurrentBase):
    """Elman RNN, ``h_t = act(x_t U^T + b_ih + h_{t-1} W^T + b_hh)``; a drop-in for ``torch.nn.RNN``.

    U is ``weight_ih_l{k}`` ``(H, I)`` (``(H, D*H)`` for k > 0), W is ``weight_hh_l{k}`` ``(H, H)``;
    the output weights V are not part of the module: put ``nn.Linear(D*H, K)`` on its output.

    Args:
        input_size: I. hidden_size: H. num_layers: L (stacked; layer k > 0 reads layer k-1's output).
        nonlinearity: ``"tanh"`` or ``"relu"``. bias: add ``bias_ih`` and ``bias_hh``.
        batch_first: input/output ``(B, T, *)`` instead of ``(T, B, *)`` (states stay ``(L*D, B, H)``).
        dropout: dropout on each layer's output except the last, in training only.
        bidirectional: a second, time-reversed pass per layer (``*_reverse`` parameters); the two
            outputs are concatenated, forward first.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(nonlinearity, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None, *,
                lengths: Tensor | Sequence[int] | None = None) -> tuple[Tensor | PackedSequence, Tensor]:
        """Run the sequence.

        Args:
            input: ``(T, B, I)`` (``(B, T, I)`` if batch_first), unbatched ``(T, I)``, or a PackedSequence.
            hx: initial ``h0 (L*D, B, H)``; zeros if None.
            lengths: valid steps per sequence ``(B,)``, any order, for a padded batch (see module doc).
        Returns:
            ``output (T, B, D*H)`` (last layer, every step; PackedSequence if packed in) and
            ``h_n (L*D, B, H)``, the final state of every layer and direction.
        """
        out, (h_n,) = self._run(input, None if hx is None else (hx,), lengths)
        return out, h_n


class LSTM(_RecurrentBase):
    """LSTM (gates i, f, g, o) with the API of ``torch.nn.LSTM`` (no ``proj_size``).

    ``weight_ih_l{k}`` ``(4H, I)`` stacks U_i, U_f, U_g, U_o; ``weight_hh_l{k}`` ``(4H, H)`` stacks
    W_i, W_f, W_g, W_o. Args as :class:`RNN` (without ``nonlinearity``).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False) -> None:
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional)

    def forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None, *,
                lengths: Tensor | Sequence[int] | None = None
                ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """Run the sequence -> ``output, (h_n, c_n)``; ``hx = (h0, c0)``, each ``(L*D, B, H)``.

        ``input`` and ``lengths`` as in :meth:`RNN.forward`; ``c_n`` is the final cell state.
        """
        if hx is not None and (not isinstance(hx, tuple | list) or len(hx) != 2):
            raise ValueError("LSTM: hx must be a pair (h0, c0)")
        out, (h_n, c_n) = self._run(input, None if hx is None else tuple(hx), lengths)
        return out, (h_n, c_n)
