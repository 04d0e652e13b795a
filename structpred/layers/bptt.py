"""Backpropagation through time: truncated BPTT, gradient clipping, gradients-through-time diagnostics.

* :func:`truncated_bptt` trains a recurrent model over a long sequence in chunks of k steps, carrying
  the state forward but *detaching* it between chunks, so each chunk's backward pass stops at the
  chunk's start (k >= T is full BPTT). One loss, one (optionally clipped) optimizer step per chunk.
* :func:`clip_grad_norm` rescales gradients so their global norm is at most ``max_norm``.
* :func:`unroll` runs a cell step by step and keeps every state, so
  :func:`gradient_norms_through_time` can measure ``||dL/dh_t||`` (and ``||dL/dc_t||``) for a loss
  on the last step: the vanishing (or exploding) gradient, made visible by :func:`plot_gradient_norms`.

Shape shorthand: T time steps, B batch, I input features, H hidden size, k chunk length.

Convention: ``h_t`` is the state *after* reading ``x_t``, t = 0..T-1; the diagnostics' loss is a
function of ``h_{T-1}`` only, so ``dL/dh_t`` is the gradient that reaches step t through the recurrence.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .rnn import LSTM, RNN, LSTMCell, RNNCell

logger = logging.getLogger(__name__)

RecurrentState = Tensor | tuple[Tensor, ...] | None


def detach_state(state: RecurrentState) -> RecurrentState:
    """``state`` with every tensor detached (a Tensor, a tuple such as LSTM's ``(h, c)``, or None)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


def _as_params(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def grad_norm(parameters: Tensor | Iterable[Tensor], norm_type: float = 2.0) -> Tensor:
    """Global ``norm_type``-norm of the gradients of ``parameters`` (those without ``.grad`` skipped)."""
    grads = [p.grad.detach() for p in _as_params(parameters) if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    per_tensor = torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads])  # (P,)
    return torch.linalg.vector_norm(per_tensor, norm_type)


def clip_grad_norm(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    """Scale all gradients in place by ``min(1, max_norm / (norm + 1e-6))``; returns the norm before.

    Same rule as ``torch.nn.utils.clip_grad_norm_``: the direction of the full gradient is kept.
    """
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    params = _as_params(parameters)
    total = grad_norm(params, norm_type)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.detach().mul_(scale.to(p.grad.device))
    return total


@dataclass
class BPTTResult:
    """Per chunk: the loss and the gradient norm before clipping; and the final (detached) state."""

    losses: list[float]
    grad_norms: list[float]
    state: RecurrentState


def truncated_bptt(
    model: Callable[[Tensor, Any], tuple[Tensor, Any]],
    inputs: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    k: int,
    *,
    state: RecurrentState = None,
    max_norm: float | None = None,
    time_dim: int = 0,
    parameters: Iterable[Tensor] | None = None,
) -> BPTTResult:
    """Truncated BPTT over one long sequence: per chunk of k steps, forward, loss, backward, step.

    Args:
        model: ``(x_chunk, state) -> (output, state)``, e.g. :class:`~structpred.layers.RNN` /
            ``LSTM``, or a model that wraps one and adds the output projection V.
        inputs: ``(T, B, I)`` (time along ``time_dim``). targets: what ``loss_fn`` compares with,
            T steps along the same ``time_dim``.
        loss_fn: ``(output_chunk, target_chunk) -> scalar``.
        optimizer: stepped once per chunk (gradients zeroed before each chunk's backward).
        k: chunk length; ``k >= T`` is full BPTT (one chunk).
        state: initial state (None: the model's default, zeros).
        max_norm: clip the global gradient norm to this before each step (None: no clipping).
        parameters: what to clip / measure; default every parameter in ``optimizer``.
    Returns:
        :class:`BPTTResult` with one loss and one gradient norm per chunk, ``ceil(T / k)`` of each.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    T = inputs.shape[time_dim]
    if targets.shape[time_dim] != T:
        raise ValueError(f"inputs have {T} steps along dim {time_dim}, targets {targets.shape[time_dim]}")
    params = (list(parameters) if parameters is not None
              else [p for group in optimizer.param_groups for p in group["params"]])
    result = BPTTResult([], [], None)
    for start in range(0, T, k):
        x = inputs.narrow(time_dim, start, min(k, T - start))  # (k, B, I)
        y = targets.narrow(time_dim, start, x.shape[time_dim])
        optimizer.zero_grad()
        output, state = model(x, state)
        loss = loss_fn(output, y)
        loss.backward()
        norm = clip_grad_norm(params, max_norm) if max_norm is not None else grad_norm(params)
        optimizer.step()
        # The carried state keeps its value but forgets its history: the next backward stops here.
        state = detach_state(state)
        result.losses.append(float(loss.detach()))
        result.grad_norms.append(float(norm))
        logger.debug("bptt chunk at t=%d: loss %.4g, grad norm %.4g", start, result.losses[-1], norm)
    result.state = state
    return result


def unroll(
    cell: Callable[[Tensor, Any], Tensor | tuple[Tensor, ...]], inputs: Tensor, state: RecurrentState = None
) -> list[tuple[Tensor, ...]]:
    """Run ``cell`` over ``inputs (T, B, I)`` step by step; returns the T states, each ``(h,)`` or ``(h, c)``.

    The returned tensors are the graph's own per-step states (not copies), so gradients with
    respect to them can be taken (``torch.autograd.grad(loss, [s[0] for s in states])``).
    """
    if inputs.dim() < 2:
        raise ValueError(f"unroll: inputs must be (T, B, I) or (T, I), got {tuple(inputs.shape)}")
    states: list[tuple[Tensor, ...]] = []
    for x_t in inputs.unbind(0):  # T x (B, I)
        out = cell(x_t, state)
        state = out
        states.append((out,) if isinstance(out, Tensor) else tuple(out))
    return states


@dataclass
class GradientNorms:
    """``h[t] = ||dL/dh_t||`` and, for an LSTM, ``c[t] = ||dL/dc_t||``, each ``(T,)``."""

    h: Tensor
    c: Tensor | None = None


def gradient_norms_through_time(
    cell_module: nn.Module,
    inputs: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    state: RecurrentState = None,
) -> GradientNorms:
    """Norm of the loss gradient with respect to every step's state, for a loss on the last step.

    Args:
        cell_module: an :class:`RNNCell` / :class:`LSTMCell`, or a 1-layer unidirectional
            :class:`RNN` / :class:`LSTM` (its parameters are used through :meth:`cell`).
        inputs: ``(T, B, I)``.
        loss_fn: ``h_{T-1} (B, H) -> scalar``.
        state: initial state (zeros if None).
    Returns:
        :class:`GradientNorms`; ``h[T-1]`` is the gradient at the loss, ``h[0]`` what is left of it T-1
        steps back.
    """
    if isinstance(cell_module, RNN | LSTM):
        if cell_module.num_layers != 1 or cell_module.bidirectional:
            raise ValueError("gradient_norms_through_time: pass a cell or a 1-layer unidirectional RNN/LSTM")
        cell_module = cell_module.cell()
    if not isinstance(cell_module, RNNCell | LSTMCell):
        raise ValueError(
            f"gradient_norms_through_time: expected an RNN/LSTM cell, got {type(cell_module).__name__}")
    with torch.enable_grad():
        states = unroll(cell_module, inputs, state)
        loss = loss_fn(states[-1][0])
        n = len(states[0])  # 1 (h) or 2 (h, c)
        per_step = [s[j] for j in range(n) for s in states]  # h_0..h_{T-1}, then c_0..c_{T-1}
        grads = torch.autograd.grad(loss, per_step, allow_unused=True)
    norms = torch.stack([
        torch.linalg.vector_norm(g) if g is not None else per_step[0].new_zeros(()) for g in grads
    ]).view(n, len(states))  # (n*T,) -> (n, T)
    return GradientNorms(norms[0], norms[1] if n == 2 else None)


def rnn_vs_lstm_gradient_norms(
    steps: int = 120,
    hidden_size: int = 32,
    input_size: int = 8,
    batch: int = 4,
    forget_bias: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> dict[str, GradientNorms]:
    """The classic experiment: a standard-init tanh RNN vs an LSTM with forget-gate bias ``forget_bias``.

    Same random inputs ``(steps, batch, input_size)`` and a fixed random readout (the V of the
    lecture) of ``h_{T-1}`` as the loss. float64 by default, so tiny norms do not underflow.
    """
    torch.manual_seed(seed)
    rnn, lstm = RNNCell(input_size, hidden_size).to(dtype), LSTMCell(input_size, hidden_size).to(dtype)
    with torch.no_grad():
        H = hidden_size
        assert lstm.bias_ih is not None and lstm.bias_hh is not None
        lstm.bias_ih[H:2 * H] = forget_bias  # the f block of (i, f, g, o); total forget bias = forget_bias
        lstm.bias_hh[H:2 * H] = 0.0
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, input_size, generator=g, dtype=dtype)
    readout = torch.randn(hidden_size, generator=g, dtype=dtype) / math.sqrt(hidden_size)  # (H,)

    def loss_fn(h: Tensor) -> Tensor:
        return (h @ readout).sum()  # (B, H) @ (H,) -> (B,) -> scalar

    return {"RNN (tanh)": gradient_norms_through_time(rnn, x, loss_fn),
            f"LSTM (forget bias {forget_bias:g})": gradient_norms_through_time(lstm, x, loss_fn)}


def plot_gradient_norms(
    norms: Mapping[str, GradientNorms | Tensor],
    path: str | Path,
    title: str = "gradient of the last-step loss through time",
) -> Path:
    """Write a PNG of ``||dL/dh_t||`` (solid) and ``||dL/dc_t||`` (dashed) against t, log scale.

    ``norms`` maps a label to a :class:`GradientNorms` or a ``(T,)`` tensor. Zeros (underflow)
    are left out of the log plot. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency: the viz extra
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, value in norms.items():
        gn = value if isinstance(value, GradientNorms) else GradientNorms(value)
        curves = [(gn.h, "-", "dL/dh")] + ([(gn.c, "--", "dL/dc")] if gn.c is not None else [])
        for curve, style, what in curves:
            y = curve.detach().double().cpu()
            t = torch.arange(y.numel())
            keep = y > 0
            ax.semilogy(t[keep].numpy(), y[keep].numpy(), style, label=f"{label}: ||{what}_t||")
    ax.set_xlabel("time step t (loss at the last step)")
    ax.set_ylabel("gradient norm")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out
