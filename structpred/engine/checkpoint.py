"""Checkpoints: safetensors for every tensor, JSON for everything else; atomic; keep-last-N.

A checkpoint ``ckpt-<step>`` is two files in the run directory:

- ``ckpt-<step>.safetensors`` — model weights (``model/…``), optimizer tensors (``optim/…``,
  e.g. momentum buffers) and the torch RNG states (``rng/…``);
- ``ckpt-<step>.json`` — config, epoch, step, step within the epoch, optimizer scalars and
  parameter groups, numpy and Python RNG states, and the metrics so far.

The best checkpoint by the task's headline metric is named in ``best.json`` (``{"checkpoint":
"ckpt-….json", "metric": "map", "value": …, "epoch": …}``); it is kept beside the last
``keep_last`` ones, never deleted while it is the best. ``load_checkpoint(RUN_DIR)`` reads the
newest; ``best_checkpoint(RUN_DIR)`` the best.

Each file is written to a temporary name, flushed to disk and renamed with ``os.replace``
(atomic on POSIX); the JSON goes last, so a JSON file that exists always describes complete
weights. A run killed at any moment therefore leaves its last good checkpoint intact. Nothing
is unpickled: loading cannot execute code.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..models.weights.load import CHECKPOINT_NAME, MODEL_PREFIX

log = logging.getLogger(__name__)

_NAME = CHECKPOINT_NAME
BEST = "best.json"


def checkpoint_name(step: int) -> str:
    """The JSON file name of the checkpoint written at ``step``."""
    return f"ckpt-{step:08d}.json"


def _atomic_write(path: Path, write: Any) -> None:
    """Write via ``write(tmp_path)`` then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep_last: int = 3,
    best: bool = False,
) -> Path:
    """Write ``ckpt-<step>`` atomically and delete all but the newest ``keep_last`` (and the best).

    Args:
        state: JSON-able training state (epoch, step_in_epoch, config, metrics...); its
            ``"best"`` entry is what ``best.json`` records.
        best: this checkpoint is the run's best: ``best.json`` names it.
    Returns:
        the JSON file's path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"{MODEL_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(state)
    meta["step"] = step
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    rng_tensors, meta["rng"] = rng_state()
    tensors.update(rng_tensors)
    stem = Path(checkpoint_name(step)).stem
    weights = run_dir / f"{stem}.safetensors"
    meta["weights"] = weights.name
    _atomic_write(weights, lambda p: save_file(tensors, str(p)))
    _atomic_write(run_dir / f"{stem}.json", lambda p: p.write_text(json.dumps(meta, indent=1)))
    if best:
        record = {**(state.get("best") or {}), "checkpoint": f"{stem}.json"}
        _atomic_write(run_dir / BEST, lambda p: p.write_text(json.dumps(record, indent=1)))
    kept = best_checkpoint(run_dir)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        if old == kept:
            continue
        old.with_suffix(".safetensors").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    log.info("saved checkpoint %s", run_dir / f"{stem}.json")
    return run_dir / f"{stem}.json"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (their JSON files) in ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``run_dir``, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def better(value: float | None, best: dict[str, Any] | None, higher_is_better: bool) -> bool:
    """Whether ``value`` beats ``best["value"]`` (no best yet: any real figure does).

    NaN, None and COCO's -1 ("no ground truth") never do."""
    if value is None or math.isnan(value) or (higher_is_better and value < 0):
        return False
    if best is None:
        return True
    old = float(best["value"])
    return value > old if higher_is_better else value < old


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``best.json`` names in ``run_dir`` (if it still exists), or None."""
    record = Path(run_dir) / BEST
    try:
        name = json.loads(record.read_text())["checkpoint"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    path = Path(run_dir) / str(name)
    return path if path.is_file() else None


def resolve_checkpoint(path: str | Path, best: bool = False) -> Path:
    """A checkpoint's JSON file from a run directory (newest, or the best with ``best``), a
    ``ckpt-*.json`` / ``.safetensors`` file or ``best.json``; ``ValueError`` if there is none."""
    path = Path(path)
    if path.is_dir():
        found = best_checkpoint(path) if best else latest_checkpoint(path)
        if found is None:
            what = f"best checkpoint ({BEST})" if best else "checkpoint (ckpt-*.json)"
            raise ValueError(f"{path}: no {what} in this directory")
        return found
    if best:
        raise ValueError(f"{path}: --best needs a run directory, not a file")
    if path.name == BEST:
        found = best_checkpoint(path.parent)
        if found is None:
            raise ValueError(f"{path}: names no existing checkpoint")
        return found
    if path.suffix == ".safetensors":
        return path.with_suffix(".json")
    if not path.exists():
        raise ValueError(f"{path}: no such checkpoint file or run directory")
    return path


def read_meta(path: str | Path, best: bool = False) -> tuple[Path, dict[str, Any]]:
    """A checkpoint's JSON state without its tensors: (the JSON file, the state)."""
    path = resolve_checkpoint(path, best)
    try:
        return path, json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read checkpoint state ({err})") from err


def load_checkpoint(path: str | Path, best: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint (see :func:`resolve_checkpoint`) -> (tensors, state)."""
    path, meta = read_meta(path, best)
    weights = path.with_name(meta.get("weights", path.with_suffix(".safetensors").name))
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights}: cannot read checkpoint weights ({err})") from err
    return tensors, meta


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
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape (checkpoint vs model) {wrong[:5]}"
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
    state = _join_optimizer(tensors, meta["optimizer"])
    kind = type(optimizer).__name__
    expected = {"SGD": {"momentum_buffer"}, "AdamW": {"exp_avg", "exp_avg_sq", "step"}}.get(kind)
    for pid, entries in state["state"].items():
        if expected is not None and not set(entries) <= expected | {"max_exp_avg_sq"}:
            raise ValueError(f"parameter {pid} holds {sorted(entries)}, not a {kind} state")
    optimizer.load_state_dict(state)
