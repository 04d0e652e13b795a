"""Loss weighting of a multi-task network: fixed, uncertainty (Kendall et al. 2018), dynamic
weight averaging (Liu et al. 2019) and GradNorm (Chen et al. 2018). docs/multitask_weighting.md
gives the formulas, where the papers and LibMTL differ, and what the tests check.

Shape shorthand: K heads (all of ``self.heads``), P heads present in the batch (P <= K).

Contract (one for all schemes): ``weighting(head_losses, shared) -> (weights, extra)``.

* ``head_losses``: each present head's total loss, a scalar with grad (a subset of the heads; may
  be empty, which gives ``({}, {})``).
* ``shared``: the last shared layer's parameters; only GradNorm differentiates w.r.t. them.
* ``weights[h]``: a scalar Tensor on the loss's device and dtype, multiplying every loss term of
  head ``h``; ``extra``: additional loss terms (keys start with ``loss_``) the engine sums.

The state of a scheme (learned log-variances or weights, DWA's running window sums, GradNorm's
first losses) lives in parameters and buffers, so it moves with ``.to()`` and a checkpoint resumes
it exactly. DWA and GradNorm update their state only when ``self.training`` and grad is enabled.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from functools import reduce

import torch
from torch import Tensor, nn

__all__ = [
    "DynamicWeightAverage",
    "FixedWeighting",
    "GradNormWeighting",
    "LossWeighting",
    "UncertaintyWeighting",
    "build_weighting",
]

Weights = tuple[dict[str, Tensor], dict[str, Tensor]]


class LossWeighting(nn.Module):
    """Base class: checks the heads and the losses, then calls :meth:`_weigh` (non-empty input)."""

    heads: tuple[str, ...]

    def __init__(self, heads: Sequence[str]) -> None:
        super().__init__()
        heads = tuple(heads)
        if not heads or not all(isinstance(h, str) and h for h in heads):
            raise ValueError(f"{type(self).__name__}: heads must be non-empty names, got {heads!r}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"{type(self).__name__}: head names must be unique, got {heads!r}")
        self.heads = heads

    def forward(self, head_losses: Mapping[str, Tensor], shared: Sequence[Tensor] = ()) -> Weights:
        """Weights of the present heads and extra loss terms (see the module docstring)."""
        for name, loss in head_losses.items():
            if name not in self.heads:
                raise ValueError(f"{type(self).__name__}: unknown head {name!r}; heads are {self.heads}")
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(
                    f"{type(self).__name__}: the loss of head {name!r} must be a scalar, got {shape}"
                )
        if not head_losses:
            return {}, {}
        return self._weigh(dict(head_losses), tuple(shared))

    def _weigh(self, head_losses: dict[str, Tensor], shared: tuple[Tensor, ...]) -> Weights:
        raise NotImplementedError

    def _index(self, head_losses: Mapping[str, Tensor], device: torch.device) -> Tensor:
        """int64[P]: the position in ``self.heads`` of each present head, in ``head_losses`` order."""
        return torch.tensor([self.heads.index(h) for h in head_losses], dtype=torch.long, device=device)

    def _per_head(self, values: Tensor, head_losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``values`` (Tensor[K]) picked for the present heads, each on its loss's device and dtype."""
        return {h: values[self.heads.index(h)].to(loss.device, loss.dtype) for h, loss in head_losses.items()}

    def _updating(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


def _common_dtype(losses: Mapping[str, Tensor]) -> torch.dtype:
    return reduce(torch.promote_types, (loss.dtype for loss in losses.values()))


class FixedWeighting(LossWeighting):
    """Constant weights: ``weights[h] = weights.get(h, 1)``, no extra term, no parameters."""

    weight: Tensor

    def __init__(self, heads: Sequence[str], *, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(heads)
        given = dict(weights or {})
        for name, value in given.items():
            if name not in self.heads:
                raise ValueError(f"FixedWeighting: weight for unknown head {name!r}; heads are {self.heads}")
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"FixedWeighting: weight of head {name!r} must be finite and >= 0, got {value!r}"
                )
        values = [float(given.get(h, 1.0)) for h in self.heads]
        # Not persistent: the weights are configuration, not state a checkpoint should override.
        self.register_buffer("weight", torch.tensor(values), persistent=False)  # (K,)

    def _weigh(self, head_losses: dict[str, Tensor], shared: tuple[Tensor, ...]) -> Weights:
        return self._per_head(self.weight, head_losses), {}


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty (Kendall, Gal, Cipolla, CVPR 2018), in LibMTL's form.

    One learnable log-variance ``s_h`` per head: ``total = sum_h L_h / (2 exp(s_h)) + s_h / 2``, so
    ``weights[h] = 0.5 exp(-s_h)`` (with grad to ``s_h``) and
    ``extra = {"loss_uncertainty": sum over present heads of s_h / 2}``.
    """

    def __init__(self, heads: Sequence[str], *, log_var_init: float = 0.0) -> None:
        super().__init__(heads)
        if not math.isfinite(log_var_init):
            raise ValueError(f"UncertaintyWeighting: log_var_init must be finite, got {log_var_init}")
        self.log_var = nn.Parameter(torch.full((len(self.heads),), float(log_var_init)))  # (K,)

    def _weigh(self, head_losses: dict[str, Tensor], shared: tuple[Tensor, ...]) -> Weights:
        device = next(iter(head_losses.values())).device
        s = self.log_var.to(device)[self._index(head_losses, device)]  # (K,) -> (P,)
        weights = {
            h: (0.5 * torch.exp(-s[i])).to(loss.dtype) for i, (h, loss) in enumerate(head_losses.items())
        }
        return weights, {"loss_uncertainty": (0.5 * s.sum()).to(_common_dtype(head_losses))}


class DynamicWeightAverage(LossWeighting):
    """Dynamic weight averaging (Liu, Johns, Davison, CVPR 2019, eq. 7).

    ``lambda_k = K exp(w_k / T) / sum_i exp(w_i / T)``, ``w_k = L_k(t-1) / L_k(t-2)``, ``L_k(t)``
    the mean loss of head ``k`` over window ``t``. A window is ``period`` training steps (the model
    does not see the engine's epochs; with ``period`` = steps per epoch it is the paper's epoch).
    ``lambda = 1`` during the first two windows. A head's window mean is over the steps where it is
    present; a ratio that is not finite or has a head absent from a window counts as 1. The
    softmax runs over all K heads, so a window's weights do not depend on which heads a batch has.
    The weights are constants (no grad); no extra term.
    """

    window_sum: Tensor
    window_count: Tensor
    window_step: Tensor
    windows_done: Tensor
    last_means: Tensor

    def __init__(self, heads: Sequence[str], *, temperature: float = 2.0, period: int = 100) -> None:
        super().__init__(heads)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"DynamicWeightAverage: temperature must be finite and > 0, got {temperature}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"DynamicWeightAverage: period must be an int >= 1, got {period!r}")
        self.temperature = float(temperature)
        self.period = period
        K = len(self.heads)
        self.register_buffer("window_sum", torch.zeros(K))  # (K,) loss sum in the current window
        self.register_buffer("window_count", torch.zeros(K, dtype=torch.long))  # (K,) steps present
        self.register_buffer("window_step", torch.zeros((), dtype=torch.long))  # steps in this window
        self.register_buffer("windows_done", torch.zeros((), dtype=torch.long))
        # (2, K): rows are the means of windows t-2 and t-1; 0 where not seen (the losses are >= 0,
        # and a checkpoint refuses NaN buffers)
        self.register_buffer("last_means", torch.zeros(2, K))

    def current_weights(self) -> Tensor:
        """Tensor[K]: the lambdas in use for the current window (1 during the first two)."""
        seen = (self.last_means > 0).all(0)  # (K,): a mean in both windows
        ratio = self.last_means[1] / torch.where(seen, self.last_means[0], 1.0)  # (K,)
        ratio = torch.where(seen & torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        lam = len(self.heads) * torch.softmax(ratio / self.temperature, dim=0)
        return torch.where(self.windows_done >= 2, lam, torch.ones_like(lam))

    def _weigh(self, head_losses: dict[str, Tensor], shared: tuple[Tensor, ...]) -> Weights:
        lam = self.current_weights()  # (K,), computed before this step joins the window
        weights = self._per_head(lam, head_losses)
        if self._updating():
            self._accumulate(head_losses)
        return weights, {}

    @torch.no_grad()
    def _accumulate(self, head_losses: dict[str, Tensor]) -> None:
        """Add this step's losses to the window; close the window after ``period`` steps.
        Branch-free on tensors, so no device synchronisation."""
        device = self.window_sum.device
        idx = self._index(head_losses, device)  # (P,)
        dtype = self.window_sum.dtype
        values = torch.stack([loss.detach().to(device, dtype) for loss in head_losses.values()])  # (P,)
        finite = torch.isfinite(values)  # a NaN / inf step is left out of the mean
        self.window_sum.index_add_(0, idx, torch.where(finite, values, torch.zeros_like(values)))
        self.window_count.index_add_(0, idx, finite.long())
        self.window_step += 1
        full = self.window_step >= self.period
        count = self.window_count
        mean = torch.where(count > 0, self.window_sum / count.clamp(min=1), 0.0)  # (K,), 0: not seen
        rolled = torch.stack([self.last_means[1], mean])  # (2, K)
        self.last_means.copy_(torch.where(full, rolled, self.last_means))
        self.window_sum.masked_fill_(full, 0.0)
        self.window_count.masked_fill_(full, 0)
        self.window_step.masked_fill_(full, 0)
        self.windows_done += full.long()

    def extra_repr(self) -> str:
        return f"heads={self.heads}, temperature={self.temperature}, period={self.period}"


class GradNormWeighting(LossWeighting):
    """GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018), one backward per step.

    Learnable ``w_h`` (init 1). At each training forward with ``shared`` given: ``w`` is clamped
    to >= 1e-6 and renormalised in place so ``sum(w) = K``; ``L_h(0)`` is recorded the first time
    head ``h`` is seen; ``g_h = ||d L_h / d shared||_2`` over all shared tensors concatenated;
    ``G_h = w_h g_h`` (grad to ``w_h`` only); ``r_h = (L_h / L_h(0)) / mean_present(L / L(0))``;
    ``target_h = (mean_present(G) r_h^alpha)`` detached; ``extra = {"loss_gradnorm":
    sum_h |G_h - target_h|}``; ``weights[h] = w_h`` detached. The engine's single backward then
    gives the network ``grad(sum_h w_h L_h)`` and ``w`` ``grad(L_grad)`` only: the paper's two updates.
    In eval mode, with grad disabled or without ``shared``: ``weights = K w / sum(w)`` detached (``w``
    untouched), no extra term, no extra autograd pass.
    """

    initial_loss: Tensor

    def __init__(self, heads: Sequence[str], *, alpha: float = 1.5) -> None:
        super().__init__(heads)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"GradNormWeighting: alpha must be finite and >= 0, got {alpha}")
        self.alpha = float(alpha)
        K = len(self.heads)
        self.weight = nn.Parameter(torch.ones(K))  # (K,)
        # (K,) L_h(0); 0: unseen (a checkpoint refuses NaN buffers)
        self.register_buffer("initial_loss", torch.zeros(K))

    def _weigh(self, head_losses: dict[str, Tensor], shared: tuple[Tensor, ...]) -> Weights:
        K = len(self.heads)
        if not (self._updating() and shared):
            with torch.no_grad():
                w = self.weight.clamp(min=1e-6)
                w = w * (K / w.sum())  # (K,), a new tensor: the parameter is untouched
            return self._per_head(w, head_losses), {}

        with torch.no_grad():
            self.weight.clamp_(min=1e-6)
            self.weight.mul_(K / self.weight.sum())
        losses = list(head_losses.values())
        device, dtype = losses[0].device, _common_dtype(head_losses)
        idx = self._index(head_losses, self.initial_loss.device)  # (P,)
        L = torch.stack([loss.detach().to(device, dtype) for loss in losses])  # (P,)
        with torch.no_grad():
            seen = self.initial_loss[idx]  # (P,)
            first = (seen == 0) & torch.isfinite(L.to(seen.device))
            self.initial_loss[idx] = torch.where(first, L.to(seen), seen)
        L0 = self.initial_loss[idx].to(device, dtype)  # (P,)
        rate = L / L0  # (P,) inverse training rate
        rate = torch.where(torch.isfinite(rate), rate, torch.ones_like(rate))
        r = rate / rate.mean()  # (P,)

        g = torch.stack([self._grad_norm(loss, shared).to(device, dtype) for loss in losses])  # (P,)
        w = self.weight.to(device, dtype)[idx.to(device)]  # (P,), with grad to self.weight
        G = w * g  # (P,)
        target = (G.mean() * r.pow(self.alpha)).detach()  # (P,)
        extra = {"loss_gradnorm": (G - target).abs().sum()}
        wd = w.detach()  # w is a gather (a new tensor): the next in-place renormalisation leaves it be
        weights = {h: wd[i].to(loss.dtype) for i, (h, loss) in enumerate(head_losses.items())}
        return weights, extra

    @staticmethod
    def _grad_norm(loss: Tensor, shared: tuple[Tensor, ...]) -> Tensor:
        """||d loss / d shared||_2 over all shared tensors (a parameter the loss does not reach
        counts as 0); a detached scalar."""
        if not loss.requires_grad:
            return torch.zeros((), device=loss.device, dtype=loss.dtype)
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        sq = [g.detach().pow(2).sum() for g in grads if g is not None]
        if not sq:
            return torch.zeros((), device=loss.device, dtype=loss.dtype)
        return torch.stack([s.to(loss.device) for s in sq]).sum().sqrt()

    def extra_repr(self) -> str:
        return f"heads={self.heads}, alpha={self.alpha}"


_SCHEMES: dict[str, Callable[..., LossWeighting]] = {
    "fixed": FixedWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gradnorm": GradNormWeighting,
}


def build_weighting(name: str, heads: Sequence[str], **options: object) -> LossWeighting:
    """The weighting scheme ``name`` ("fixed", "uncertainty", "dwa", "gradnorm") over ``heads``;
    ``options`` are the scheme's keyword options (``ValueError`` for an unknown one)."""
    if name not in _SCHEMES:
        raise ValueError(f"unknown loss weighting {name!r}; known: {', '.join(sorted(_SCHEMES))}")
    builder = _SCHEMES[name]
    params = inspect.signature(builder).parameters
    known = sorted(p for p, spec in params.items() if spec.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"loss weighting {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(known) or 'none'}"
        )
    return builder(heads, **options)
