"""Checkpoints: safetensors for every tensor, JSON for everything else; atomic; keep-last-N.

A checkpoint ``ckpt-<step>`` is two files in the run directory:

- ``ckpt-<step>.safetensors`` — model weights (``model/…``), optimizer tensors (``optim/…``,
  e.g. momentum buffers) and the torch RNG states (``rng/…``);
- ``ckpt-<step>.json`` — config, epoch, step, step within the epoch, optimizer scalars and
  parameter groups, numpy and Python RNG states, and the metrics so far.

Each file is written to a temporary name, flushed to disk and renamed with ``os.replace``
(atomic on POSIX); the JSON goes last, so a JSON file that exists always describes complete
weights. A run killed at any moment therefore leaves its last good checkpoint intact. Nothing
is unpickled: loading cannot execute code.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d+)\.json$")


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
) -> Path:
    """Write ``ckpt-<step>`` atomically and delete all but the newest ``keep_last``.

    Args:
        state: JSON-able training state (epoch, step_in_epoch, config, metrics...).
    Returns:
        the JSON file's path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(state)
    meta["step"] = step
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    rng_tensors, meta["rng"] = rng_state()
    tensors.update(rng_tensors)
    stem = f"ckpt-{step:08d}"
    weights = run_dir / f"{stem}.safetensors"
    meta["weights"] = weights.name
    _atomic_write(weights, lambda p: save_file(tensors, str(p)))
    _atomic_write(run_dir / f"{stem}.json", lambda p: p.write_text(json.dumps(meta, indent=1)))
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
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


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint's JSON (or its run directory's newest) -> (tensors, state)."""
    path = Path(path)
    if path.is_dir():
        newest = latest_checkpoint(path)
        if newest is None:
            raise ValueError(f"{path}: no checkpoint (ckpt-*.json) in this directory")
        path = newest
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read checkpoint state ({err})") from err
    weights = path.with_name(meta.get("weights", path.with_suffix(".safetensors").name))
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights}: cannot read checkpoint weights ({err})") from err
    return tensors, meta


def model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``model/…`` entries of a checkpoint, as a ``state_dict``."""
    return {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}


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
    if optimizer is not None and "optimizer" in meta:
        optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    if rng:
        set_rng_state(tensors, meta["rng"])
