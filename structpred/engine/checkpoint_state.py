"""What a checkpoint holds, apart from the files (:mod:`.checkpoint`): the JSON state's
validation, optimizer and RNG states as tensors + JSON, and restoring them into a model.

Every field of a checkpoint's JSON is checked on read (``_meta_problem``): step counters,
the weights file's name and SHA-256, the config's rules (:mod:`.recipe`), optimizer groups and
the numpy / Python RNG states (applied to throw-away generators first), so a hostile or damaged
file is one ``ValueError`` naming it, never an exception from inside numpy or torch.
"""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..models.weights.load import MODEL_PREFIX

_WEIGHTS = re.compile(r"^ckpt-(\d+)(\.[0-9a-f]{12})?\.safetensors$")  # see checkpoint.save_checkpoint
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer ``state_dict`` -> (tensors by flat name, JSON-able rest)."""
    tensors: dict[str, Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        scalars: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
        per_param[str(pid)] = scalars
    return tensors, {"param_groups": state["param_groups"], "scalars": per_param}


def _join_optimizer(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(s) for pid, s in rest["scalars"].items()}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Every RNG the training loop touches: (torch tensors, JSON-able numpy/Python states)."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    py_state = random.getstate()
    rest = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, rest


def set_rng_state(tensors: dict[str, Tensor], rest: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = rest["python"]
    random.setstate((version, tuple(internal), gauss))


def _int_field(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{key} must be an int >= 0, got {value!r}"
    return None


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a checkpoint's JSON state (None: nothing)."""
    if not isinstance(meta, dict):
        return f"the state must be a JSON object, got {type(meta).__name__}"
    for key in ("step", "epoch", "step_in_epoch", "weights_bytes"):
        if (key == "step" or key in meta) and (problem := _int_field(meta, key)) is not None:
            return problem
    for key in ("config", "rng"):  # every save writes them
        if key not in meta:
            return f"no {key!r} entry"
    name = meta.get("weights", "ckpt-0.safetensors")
    if not isinstance(name, str) or not _WEIGHTS.match(name):
        return f"weights must name a ckpt-<step>.safetensors file beside it, got {name!r}"
    if "weights_sha256" in meta and not (
        isinstance(meta["weights_sha256"], str) and _SHA.match(meta["weights_sha256"])
    ):
        return f"weights_sha256 must be 64 lower-case hex digits, got {meta['weights_sha256']!r}"
    for key in ("config", "metrics", "rng", "optimizer"):
        if key in meta and not isinstance(meta[key], dict):
            return f"{key} must be a JSON object, got {type(meta[key]).__name__}"
    if "ema" in meta:
        from .ema import ema_record_problem

        if (problem := ema_record_problem(meta["ema"])) is not None:
            return problem
    if "best" in meta and meta["best"] is not None and not isinstance(meta["best"], dict):
        return f"best must be a JSON object or null, got {type(meta['best']).__name__}"
    groups = meta.get("optimizer", {}).get("param_groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return "optimizer.param_groups must be a list of JSON objects"
    if "config" in meta:
        from .recipe import config_problem

        for key, value in meta["config"].items():
            if (problem := config_problem(key, value)) is not None:
                return f"config.{key}: {problem}"
    if "rng" in meta:
        try:
            _check_rng(meta["rng"])
        except (TypeError, ValueError, IndexError, KeyError, OverflowError) as err:
            return f"rng: not a numpy / Python RNG state ({err!r})"
    return None


def _check_rng(rest: dict[str, Any]) -> None:
    """Apply the saved numpy and Python states to throw-away generators (raises if they do not fit)."""
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.RandomState().set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = rest["python"]
    random.Random().setstate((version, tuple(internal), gauss))


def model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``model/…`` entries of a checkpoint, as a ``state_dict``."""
    return {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}


def restore(
    tensors: dict[str, Tensor],
    meta: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    rng: bool = True,
) -> None:
    """Load weights (strict: every name and shape must match), optimizer and RNG states."""
    weights, expected = model_state(tensors), model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        hint = getattr(model, "checkpoint_hint", None)  # a model that can name the likely cause
        why = hint(missing, unexpected) if callable(hint) else ""
        raise ValueError(
            f"{meta.get('weights', 'checkpoint')}: does not fit {type(model).__name__}: "
            f"missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape (checkpoint vs model) {wrong[:5]}"
            + (f"; {why}" if why else "")
        )
    model.load_state_dict(weights, strict=True)
    if optimizer is not None:
        restore_optimizer(tensors, meta, optimizer)
    if rng:
        set_rng_state(tensors, meta["rng"])


def restore_optimizer(
    tensors: dict[str, Tensor], meta: dict[str, Any], optimizer: torch.optim.Optimizer
) -> None:
    """Load the checkpoint's optimizer state into ``optimizer`` (nothing if it has none).

    Raises ``ValueError`` when the state cannot apply (another optimizer's keys, other parameter
    groups); ``optimizer`` is then unchanged.
    """
    if "optimizer" not in meta:
        return
    kind = type(optimizer).__name__
    try:
        state = _join_optimizer(tensors, meta["optimizer"])
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise ValueError(f"the optimizer state is malformed ({err!r})") from None
    expected = {"SGD": {"momentum_buffer"}, "AdamW": {"exp_avg", "exp_avg_sq", "step"}}.get(kind)
    for pid, entries in state["state"].items():
        if expected is not None and not set(entries) <= expected | {"max_exp_avg_sq"}:
            raise ValueError(f"parameter {pid} holds {sorted(entries)}, not a {kind} state")
    try:
        optimizer.load_state_dict(state)
    except (TypeError, KeyError, IndexError) as err:  # hostile parameter groups
        raise ValueError(f"the optimizer state does not fit {kind} ({err!r})") from None
