"""An exponential moving average (EMA) of a model's weights, as every modern YOLO and timm keep.

After each optimizer step ``u`` (1-based), every floating-point entry of the EMA's ``state_dict``
moves toward the model's::

    d_u   = decay * (1 - exp(-u / tau))        # tau = 0: d_u = decay from the first step
    ema  <- d_u * ema + (1 - d_u) * model

the ramp of ultralytics' ``ModelEMA`` (decay 0.9999, tau 2000 there): early on ``d_u`` is small,
so the average follows the fast-moving weights instead of remembering the random start. Choices
(docs/ema.md):

- floating-point *buffers* (batch norm's ``running_mean`` / ``running_var``) are averaged like the
  parameters, as ultralytics and timm's ``ModelEmaV2`` do (the EMA then carries statistics of a
  weight average, not of the last step's weights); integer buffers (``num_batches_tracked``) are
  copied;
- the average is kept in each entry's own dtype (float32 for a model trained under ``amp``:
  autocast computes in bf16 but the weights stay float32) on the model's device;
- under data parallel it is the average of the unwrapped module; every process applies the same
  update to the same weights, so every process holds the same average.

The spec a user gives (``--ema DECAY[,tau=N]``) is recorded canonical: ``"0.999,tau=2000"``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..models.weights.load import MODEL_PREFIX

DEFAULT_TAU = 2000.0  # ultralytics' ramp, in optimizer steps
EMA_PREFIX = "ema/"  # the average's tensors in a checkpoint's safetensors: ema/<state_dict name>


def parse_ema(spec: str, where: str = "--ema") -> tuple[float, float]:
    """``"DECAY[,tau=N]"`` -> ``(decay, tau)``; decay in (0, 1), tau >= 0 steps (0: no ramp).

    Raises ``ValueError`` naming ``where`` and the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{where} {spec!r}: expected DECAY[,tau=N], e.g. 0.999 or 0.9999,tau=2000")
    head, *rest = [part.strip() for part in spec.split(",")]
    try:
        decay = float(head)
    except ValueError:
        raise ValueError(f"{where} {spec}: the decay {head!r} is not a number (e.g. 0.999)") from None
    if not (0.0 < decay < 1.0):
        raise ValueError(f"{where} {spec}: the decay must be in (0, 1), got {head}")
    tau = DEFAULT_TAU
    for part in rest:
        key, eq, value = part.partition("=")
        if key.strip() != "tau" or not eq:
            raise ValueError(f"{where} {spec}: unknown part {part!r} (only tau=N follows the decay)")
        try:
            tau = float(value)
        except ValueError:
            raise ValueError(f"{where} {spec}: tau={value!r} is not a number (steps)") from None
        if not (math.isfinite(tau) and tau >= 0):
            raise ValueError(f"{where} {spec}: tau must be a finite number of steps >= 0, got {value}")
    return decay, tau


def canonical_ema(spec: str | None, where: str = "--ema") -> str | None:
    """The recorded form of a spec (``"none"`` / ``"off"`` / None -> None)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("none", "off")):
        return None
    decay, tau = parse_ema(spec, where)
    return f"{decay:.10g},tau={tau:.10g}"


def ema_decay(decay: float, tau: float, updates: int) -> float:
    """The decay applied at update ``updates`` (1-based): ``decay * (1 - exp(-updates / tau))``."""
    return decay if tau == 0 else decay * (1.0 - math.exp(-updates / tau))


class ModelEMA:
    """The moving average of ``model``'s weights (a frozen copy in eval mode: ``.module``).

    Args:
        model: the model being trained (a ``DistributedDataParallel`` wrapper is unwrapped).
        decay: the decay the ramp approaches, in (0, 1).
        tau: the ramp's time constant in updates (0: the full decay from the first update).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = DEFAULT_TAU) -> None:
        if not (0.0 < decay < 1.0):
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if not (math.isfinite(tau) and tau >= 0):
            raise ValueError(f"EMA tau must be a finite number of steps >= 0, got {tau}")
        self.module = copy.deepcopy(_unwrap(model)).eval()
        self.module.requires_grad_(False)
        self.decay, self.tau, self.updates = float(decay), float(tau), 0

    @classmethod
    def from_spec(cls, model: nn.Module, spec: str | None) -> ModelEMA | None:
        """The EMA a recorded spec asks for (None: no EMA)."""
        spec = canonical_ema(spec, "ema")
        if spec is None:
            return None
        decay, tau = parse_ema(spec, "ema")
        return cls(model, decay, tau)

    def current_decay(self) -> float:
        """The decay the next update applies."""
        return ema_decay(self.decay, self.tau, self.updates + 1)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average toward ``model``'s current weights and buffers."""
        d = self.current_decay()
        self.updates += 1
        source = _unwrap(model).state_dict()
        averaged_ema: list[Tensor] = []
        averaged_src: list[Tensor] = []
        seen: set[int] = set()
        for name, mine in self.module.state_dict().items():
            if mine.data_ptr() in seen:  # a tied weight (two names, one tensor): averaged once
                continue
            seen.add(mine.data_ptr())
            theirs = source[name].detach()
            if mine.is_floating_point():
                averaged_ema.append(mine)
                averaged_src.append(theirs.to(device=mine.device, dtype=mine.dtype))
            else:  # integer buffers (num_batches_tracked): the model's
                mine.copy_(theirs)
        if averaged_ema:
            torch._foreach_lerp_(averaged_ema, averaged_src, 1.0 - d)  # ema += (1 - d) (model - ema)

    def state(self) -> dict[str, Any]:
        """The JSON-able part of a checkpoint's EMA record."""
        return {"decay": self.decay, "tau": self.tau, "updates": self.updates}

    def tensors(self) -> dict[str, Tensor]:
        """The average's tensors for a checkpoint, under ``ema/`` (on the CPU)."""
        state = self.module.state_dict()
        return {f"{EMA_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in state.items()}

    def resume(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> str | None:
        """Continue from a checkpoint: its average and update count (strict: every entry, same
        shapes). A checkpoint without one (EMA added on resume with ``--override``): the average
        restarts from the restored weights, and the returned line says so."""
        weights = ema_state(tensors)
        if not weights or "ema" not in meta:
            self.module.load_state_dict(_unwrap_state(tensors), strict=True)
            self.updates = 0
            return "the checkpoint holds no weight EMA: the average starts from its weights"
        expected = self.module.state_dict()
        wrong = sorted(set(expected) ^ set(weights)) + [
            k for k, v in expected.items() if k in weights and weights[k].shape != v.shape
        ]
        if wrong:
            raise ValueError(f"the checkpoint's weight EMA does not fit the model ({wrong[:5]})")
        self.module.load_state_dict(weights, strict=True)
        self.updates = int(meta["ema"]["updates"])
        return None


def ema_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``ema/…`` entries of a checkpoint, as a ``state_dict`` (empty: the run had no EMA)."""
    return {k[len(EMA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}


def choose_weights(
    tensors: dict[str, Tensor], meta: dict[str, Any], raw: bool = False
) -> tuple[dict[str, Tensor], str | None]:
    """The checkpoint's tensors with its weight EMA in place of the raw weights (unless ``raw``)
    and :func:`weights_line` (None: the checkpoint has no EMA)."""
    averaged = ema_state(tensors)
    if not averaged:
        return tensors, None
    if raw:
        return tensors, weights_line(meta, raw)
    chosen = {k: v for k, v in tensors.items() if not k.startswith(MODEL_PREFIX)}
    chosen.update({f"{MODEL_PREFIX}{k}": v for k, v in averaged.items()})
    return chosen, weights_line(meta, raw)


def weights_line(meta: dict[str, Any], raw: bool = False) -> str | None:
    """Which weights of a checkpoint a command uses, as the CLI says it (None: it has no EMA)."""
    record = meta.get("ema")
    if not isinstance(record, dict):
        return None
    what = f"decay {record.get('decay')}, tau {record.get('tau')}, {record.get('updates')} updates"
    if raw:
        return f"weights: the raw ones (--raw-weights; the checkpoint also holds their EMA: {what})"
    return f"weights: the EMA ({what}); --raw-weights for the raw ones"


def ema_record_problem(record: Any) -> str | None:
    """What is wrong with a checkpoint's ``ema`` JSON entry (None: nothing)."""
    if not isinstance(record, dict):
        return f"ema must be a JSON object, got {type(record).__name__}"
    updates: Any = record.get("updates")
    decay: Any = record.get("decay")
    tau: Any = record.get("tau")
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
        return f"ema.updates must be an int >= 0, got {updates!r}"
    if not _number(decay) or not 0.0 < float(decay) < 1.0:
        return f"ema.decay must be a number in (0, 1), got {decay!r}"
    if not _number(tau) or not float(tau) >= 0:
        return f"ema.tau must be a finite number >= 0, got {tau!r}"
    return None


def _number(value: Any) -> bool:
    """A finite int or float (not a bool; not an int beyond float's range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _unwrap_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The raw weights of a checkpoint (``model/…``), as a ``state_dict``."""
    return {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (any other model: itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
