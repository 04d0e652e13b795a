"""One LSTM layer-direction over a whole sequence, with a hand-written BPTT backward.

:func:`lstm_scan` runs the recurrence of :mod:`structpred.layers.rnn`'s LSTM on precomputed input
projections ``xw = x U^T + b`` ``(T, B, 4H)`` (one GEMM over all steps, done by the caller, so its
gradient is autograd's one GEMM too). Three paths, one semantics:

* autograd on (something requires grad): :class:`LSTMScan`, a ``torch.autograd.Function``. The
  forward keeps every step's activated gates ``(T, B, 4H)``, ``tanh(c_t)`` and the states; the
  backward runs the BPTT recurrence with one GEMM per step (``dh_{t-1} = dgates_t W``) and a few
  fused elementwise ops, then the recurrent weight gradient is ONE GEMM over all steps
  (``dW = dgates^T h_prev``). The derivative factors are computed in bulk over all T before the loop.
* no autograd (``torch.no_grad``, frozen weights): the same forward loop writing into preallocated
  buffers, nothing saved.
* tracing / ``torch.export``: plain out-of-place ops (:func:`_reference_scan`), which exporters like.

Gate order i, f, g, o (torch's). Per step: ``a = xw_t + h_{t-1} W^T``;
``i, f, o = sigmoid(a_i, a_f, a_o)``, ``g = tanh(a_g)``; ``c_t = f c_{t-1} + i g``;
``h_t = o tanh(c_t)``. With ``valid (T, B, 1)`` (bool) a finished sequence keeps its state:
``h_t = h_{t-1}``, ``c_t = c_{t-1}`` where not valid.

Backward (``Dh``, ``Dc``: gradients reaching ``h_t``, ``c_t``; ``m`` the valid mask):
``dc = Dc + Dh * m o (1 - tanh^2 c_t)``; ``da_{i,f,g} = dc * P_{i,f,g}``, ``da_o = Dh * P_o`` with
``P = m [g i(1-i), c_{t-1} f(1-f), i (1-g^2), tanh(c_t) o(1-o)]``; ``Dc_{t-1} = dc * F``,
``F = f`` where valid else 1; ``Dh_{t-1} = da W + (1 - m) Dh + grad_out_{t-1}``.

Buffers: ``hs``, ``cs`` ``(T+1, B, H)`` hold ``h0`` and every state; for the forward direction
step t reads slot t and writes slot t+1, for the reverse direction it reads t+1 and writes t, so
the outputs are one slice of ``hs`` (no reversal, no stack).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _slots(T: int, reverse: bool) -> tuple[range, int, slice, slice]:
    """Processing order, the h0 slot, the outputs' slice and the previous states' slice of ``hs``."""
    if reverse:
        return range(T - 1, -1, -1), T, slice(0, T), slice(1, T + 1)
    return range(T), 0, slice(1, T + 1), slice(0, T)


def _project(x: Tensor, wt_ih: Tensor, b: Tensor | None, in_place: bool = False) -> Tensor:
    """``x U^T + b`` for all steps in one GEMM (``wt_ih = U^T (I, 4H)``): ``(T, B, I) -> (T, B, 4H)``,
    a fresh tensor. ``in_place`` adds the bias after the GEMM (``addmm`` first copies the bias into
    the whole output and then reads it back: ~10% slower at T*B = 3200); exporters get ``addmm``."""
    x2 = x.reshape(-1, x.shape[-1])  # (T, B, I) -> (T*B, I)
    if b is None:
        xw = torch.mm(x2, wt_ih)  # (T*B, 4H)
    else:
        xw = torch.mm(x2, wt_ih).add_(b) if in_place else torch.addmm(b, x2, wt_ih)
    return xw.view(x.shape[0], x.shape[1], -1)  # (T*B, 4H) -> (T, B, 4H)


def _scaled_weights(
    w_ih: Tensor, w_hh: Tensor, b: Tensor | None, steps: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``W^T (H, 4H)``, ``U^T (I, 4H)`` and ``b (4H,)`` with the g gate's columns times -2, so that
    one ``sigmoid`` gives ``sigmoid(-2 a_g)`` and ``tanh(a_g) = 1 - 2 sigmoid(-2 a_g)``. The
    parameters are not modified; call with autograd off.

    ``W^T`` is made contiguous when that pays (measured, 1 thread): the step GEMM ``(B, H) @ (H, 4H)``
    takes 123 us on a contiguous ``W^T`` against 162 us on the view ``W.t()`` at B32 H256, but the
    transposed copy costs 0.5 ms there (so only from 16 steps on) and 15 ms at H=1024, where it gains
    nothing. ``U^T`` stays a view: the one projection GEMM is as fast either way.
    """
    H, n_in = w_hh.shape[1], w_ih.shape[1]
    scale = torch.tensor([1.0, 1.0, -2.0, 1.0], dtype=w_hh.dtype, device=w_hh.device).view(4, 1, 1)
    wt_ih = torch.mul(w_ih.view(4, H, n_in), scale).view(4 * H, n_in).t()  # (4H, I) -> (I, 4H), a view
    if steps >= 16 and H <= 512:
        wt_hh = w_hh.t().contiguous()  # (4H, H) -> (H, 4H); copy_'s blocked transpose, 3x torch.mul's
        wt_hh.view(H, 4, H)[:, 2].mul_(-2.0)
    else:
        wt_hh = torch.mul(w_hh.view(4, H, H), scale).view(4 * H, H).t()  # (H, 4H), a view
    b2 = None if b is None else torch.mul(b.view(4, H), scale[:, :, 0]).view(4 * H)  # (4H,)
    return wt_hh, wt_ih, b2


def _forward(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b: Tensor | None,
    valid: Tensor | None,
    reverse: bool,
    factors: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """The recurrence into buffers -> ``hs (T+1, B, H)``, ``cs = -2 c`` ``(T+1, B, H)``, the activated
    gates ``(T, B, 4H)`` (the g slot holds ``sigmoid(-2 a_g)``) and, if ``factors``, the backward's
    scaled derivative factors ``P' (T, B, 4H)`` and ``K' (T, B, H)`` (see :class:`LSTMScan`).

    Seven ops a step, none with a Python-scalar tensor operand (each would cost a wrap and a copy):
    ``addmm_`` (the gates buffer starts as the input projections), one ``sigmoid_`` over all four
    gates, three for ``-2 c_t = f (-2 c_{t-1}) + 4 i s_g - 2 i``, one ``sigmoid`` for
    ``s_c = sigmoid(-2 c_t)`` and one ``addcmul`` for ``h_t = o - 2 o s_c = o tanh(c_t)``. The factors
    take seven more while the step's gates are in cache (in bulk afterwards they cost ~3x as much).
    """
    H = w_hh.shape[1]
    wt_hh, wt_ih, b2 = _scaled_weights(w_ih, w_hh, b, x.shape[0])
    gates = _project(x, wt_ih, b2, in_place=True)  # (T, B, 4H)
    T, B, _ = gates.shape
    order, first, _, _ = _slots(T, reverse)
    hs = gates.new_empty(T + 1, B, H)
    cs = gates.new_empty(T + 1, B, H)  # -2 c
    hs[first] = h0
    torch.mul(c0, -2.0, out=cs[first])
    sig_c = gates.new_empty(B, H)  # sigmoid(-2 c_t) of the current step
    g4 = gates.view(T, B, 4, H)  # (T, B, 4H) -> (T, B, 4, H)
    i_l, f_l, g_l, o_l = (g4[:, :, k].unbind(0) for k in range(4))  # 4 x T x (B, H), views made once
    a_l, h_l, c_l = gates.unbind(0), hs.unbind(0), cs.unbind(0)
    P = K = None
    if factors:
        P, K = torch.empty_like(gates), gates.new_empty(T, B, H)
        p4 = P.view(T, B, 4, H)  # (T, B, 4H) -> (T, B, 4, H)
        P_l, K_l = P.unbind(0), K.unbind(0)
        Pi_l, Pf_l, Pg_l, Po_l = (p4[:, :, k].unbind(0) for k in range(4))
    masks = valid.unbind(0) if valid is not None else None
    for t in order:
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        i, f, s_g, o = i_l[t], f_l[t], g_l[t], o_l[t]
        a = a_l[t].addmm_(h_l[prev], wt_hh).sigmoid_()  # (B, 4H): i, f, sigmoid(-2 a_g), o
        if masks is None:
            c = torch.mul(f, c_l[prev], out=c_l[cur]).addcmul_(i, s_g, value=4.0).add_(i, alpha=-2.0)
            torch.addcmul(o, o, torch.sigmoid(c, out=sig_c), value=-2.0, out=h_l[cur])
        else:
            c = torch.mul(f, c_l[prev]).addcmul_(i, s_g, value=4.0).add_(i, alpha=-2.0)
            h = torch.addcmul(o, o, torch.sigmoid(c, out=sig_c), value=-2.0)
            torch.where(masks[t], c, c_l[prev], out=c_l[cur])
            torch.where(masks[t], h, h_l[prev], out=h_l[cur])
        if factors:
            torch.addcmul(a, a, a, value=-1.0, out=P_l[t])  # D = s (1 - s) for all four sigmoids
            Pi_l[t].addcmul_(Pi_l[t], s_g, value=-2.0)  # D_i (1 - 2 s_g) = D_i g
            Pf_l[t].mul_(c_l[prev])  # D_f (-2 c_{t-1})
            Pg_l[t].mul_(i)  # D_g i = (1 - g^2) i / 4
            Po_l[t].addcmul_(Po_l[t], sig_c, value=-2.0)  # D_o (1 - 2 s_c) = D_o tanh(c_t)
            torch.addcmul(sig_c, sig_c, sig_c, value=-1.0, out=K_l[t]).mul_(o)  # o (1 - tanh^2 c_t) / 4
    return hs, cs, gates, P, K


class LSTMScan(torch.autograd.Function):
    """``(x (T, B, I), h0, c0 (B, H), w_ih (4H, I), w_hh (4H, H), b (4H,) | None, valid (T, B, 1) | None,
    reverse)`` -> ``out (T, B, H), h_n, c_n (B, H)``; hand-written backward (see the module).

    The forward stores ``P' = P / r`` and ``K' = K / 4`` with the gate scales ``r = (1, -1/2, 4, 1)``
    (i, f, g, o): what the step computes in fewest ops. The backward runs on ``dG' = dG / r``:
    ``dh_{t-1} = dG' (r W)``, and the weights' gradients are scaled back by ``r`` once, at the end.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b: Tensor | None,
        valid: Tensor | None,
        reverse: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        hs, cs, gates, P, K = _forward(x, h0, c0, w_ih, w_hh, b, valid, reverse, factors=True)
        T = x.shape[0]
        out_sl, last = _slots(T, reverse)[2], (0 if reverse else T)
        ctx.reverse = reverse
        ctx.save_for_backward(x, hs, gates, P, K, w_ih, w_hh, valid)
        return hs[out_sl], hs[last].clone(), cs[last] * -0.5

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_hn: Tensor, d_cn: Tensor) -> tuple[Tensor | None, ...]:
        x, hs, gates, P, K, w_ih, w_hh, valid = ctx.saved_tensors
        reverse: bool = ctx.reverse
        T, B, G = gates.shape
        H = G // 4
        order, _, _, prev_sl = _slots(T, reverse)
        r = torch.tensor([1.0, -0.5, 4.0, 1.0], dtype=gates.dtype, device=gates.device).view(4, 1)
        w_hh_r = torch.mul(w_hh.view(4, H, H), r.unsqueeze(2)).view(G, H)  # (4H, H), rows times r
        F: Tensor = gates.view(T, B, 4, H)[:, :, 1]  # f, (T, B, H)
        keep: tuple[Tensor, ...] | None = None
        if valid is not None:
            m = valid.to(gates.dtype)  # (T, B, 1)
            P = P * m
            K = K * m
            F = torch.where(valid, F, torch.ones((), dtype=F.dtype, device=F.device))
            keep = (1 - m).unbind(0)  # T x (B, 1): 1 where the state is carried through
        dG = torch.empty_like(gates)  # dG' = d(pre-activation gates) / r, (T, B, 4H)
        dG4 = dG.view(T, B, 4, H)  # (T, B, 4H) -> (T, B, 4, H)
        dG_ifg, dG_o = dG4[:, :, :3].unbind(0), dG4[:, :, 3].unbind(0)
        P4 = P.view(T, B, 4, H)
        P_ifg, P_ol = P4[:, :, :3].unbind(0), P4[:, :, 3].unbind(0)
        K_l, F_l, dG_l, d_out_l = K.unbind(0), F.unbind(0), dG.unbind(0), d_out.unbind(0)
        steps = list(reversed(order))  # backward order: the last processed step first
        dh = d_out_l[steps[0]] + d_hn  # (B, H)
        dc = d_cn.clone()  # (B, H), updated in place below
        dc3 = dc.unsqueeze(1)  # (B, 1, H), a view broadcast over the i, f, g gates
        for n, t in enumerate(steps):
            dc.addcmul_(dh, K_l[t], value=4.0)
            torch.mul(P_ifg[t], dc3, out=dG_ifg[t])  # (B, 3, H)
            torch.mul(P_ol[t], dh, out=dG_o[t])
            dc.mul_(F_l[t])
            if n + 1 < len(steps):
                dh_next = torch.addmm(d_out_l[steps[n + 1]], dG_l[t], w_hh_r)  # (B, 4H) @ (4H, H)
            else:
                dh_next = torch.mm(dG_l[t], w_hh_r)
            if keep is not None:
                dh_next.addcmul_(dh, keep[t])
            dh = dh_next
        # The weights' and the input's gradients: one GEMM each over all steps, then rows times r.
        need = ctx.needs_input_grad
        dG2 = dG.view(T * B, G)  # (T, B, 4H) -> (T*B, 4H)
        d_x = d_wih = d_whh = d_b = None
        if need[0]:
            w_ih_r = torch.mul(w_ih.view(4, H, -1), r.unsqueeze(2)).view(G, -1)  # (4H, I)
            d_x = torch.mm(dG2, w_ih_r).view(x.shape)  # (T*B, 4H) @ (4H, I) -> (T, B, I)
        if need[3]:  # (4H, T*B) @ (T*B, I) -> (4, H, I) * r -> (4H, I)
            d_wih = torch.mm(dG2.t(), x.reshape(T * B, -1)).view(4, H, -1).mul_(r.unsqueeze(2)).view(G, -1)
        if need[4]:  # (4H, T*B) @ (T*B, H) -> (4H, H)
            h_prev = hs[prev_sl].reshape(T * B, H)  # the states each step read
            d_whh = torch.mm(dG2.t(), h_prev).view(4, H, H).mul_(r.unsqueeze(2)).view(G, H)
        if need[5]:
            d_b = torch.mv(dG2.t(), dG2.new_ones(T * B)).view(4, H).mul_(r).view(G)  # (4H,); 2x sum(0)
        return d_x, dh, dc, d_wih, d_whh, d_b, None, None


def _reference_scan(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b: Tensor | None,
    valid: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Plain out-of-place ops (for tracers and exporters); same results as the other paths."""
    w_t = w_hh.t()  # (H, 4H)
    h, c = h0, c0
    xs = _project(x, w_ih.t(), b).unbind(0)  # T x (B, 4H)
    outs: list[Tensor] = []
    for t in _slots(len(xs), reverse)[0]:
        i, f, g, o = torch.addmm(xs[t], h, w_t).chunk(4, 1)  # (B, 4H) -> 4 x (B, H)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if valid is not None:
            c_new, h_new = torch.where(valid[t], c_new, c), torch.where(valid[t], h_new, h)
        h, c = h_new, c_new
        outs.append(h)
    if reverse:
        outs.reverse()
    return torch.stack(outs), h, c  # (T, B, H)


def _tracing() -> bool:
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def lstm_scan(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    valid: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one LSTM layer-direction.

    Args:
        x: ``(T, B, I)``. h0, c0: ``(B, H)``. w_ih: U ``(4H, I)``. w_hh: W ``(4H, H)``.
        b_ih, b_hh: ``(4H,)`` or both None. valid: ``(T, B, 1)`` bool, or None (all steps valid).
        reverse: run from the last step to the first.
    Returns:
        ``out (T, B, H)`` (every step's state), ``h_n``, ``c_n`` ``(B, H)``.
    """
    b = None if b_ih is None or b_hh is None else b_ih + b_hh  # (4H,)
    if _tracing():
        return _reference_scan(x, h0, c0, w_ih, w_hh, b, valid, reverse)
    args = (x, h0, c0, w_ih, w_hh, b)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        out, h_n, c_n = LSTMScan.apply(*args, valid, reverse)
        return out, h_n, c_n
    hs, cs, _, _, _ = _forward(*args, valid, reverse)
    T = x.shape[0]
    last = 0 if reverse else T
    return hs[_slots(T, reverse)[2]], hs[last], cs[last] * -0.5
