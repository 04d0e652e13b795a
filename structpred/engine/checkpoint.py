"""Checkpoints: safetensors for every tensor, JSON for everything else; atomic; keep-last-N.

A checkpoint ``ckpt-<step>`` is two files in the run directory:

- ``ckpt-<step>.safetensors`` — model weights (``model/…``), optimizer tensors (``optim/…``,
  e.g. momentum buffers) and the torch RNG states (``rng/…``);
- ``ckpt-<step>.json`` — config, epoch, step, step within the epoch, optimizer scalars and
  parameter groups, numpy and Python RNG states, the metrics so far, and the weights file's
  name, size and SHA-256.

The JSON is the commit record (docs/checkpoints.md): the weights are written first (temporary
name, fsync, ``os.replace``, fsync of the directory), then the JSON the same way. A checkpoint is
*complete* when its JSON parses and names a weights file of the recorded size; only complete
ones are listed, resumed or evaluated, so a kill at any instant leaves the previous complete
checkpoint as the newest. Loading verifies the SHA-256 (a mismatch is corruption, not a kill:
``ValueError`` naming the file). Leftovers of a killed save (``.*.tmp-*`` files, weights without
their JSON) are removed by the next save and by :func:`clean_partial` on resume.

The best checkpoint by the task's headline metric is recorded in each checkpoint's state
(``best``, committed with it) and mirrored in ``best.json`` (``{"checkpoint": "ckpt-….json",
"metric": "map", "value": …, "epoch": …}``), which every save re-syncs; it is kept beside the
last ``keep_last`` ones, never deleted while it is the best. ``load_checkpoint(RUN_DIR)`` reads
the newest complete checkpoint; ``best_checkpoint(RUN_DIR)`` the best. Nothing is unpickled:
loading cannot execute code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor

from ..data import limits
from ..models.weights.load import CHECKPOINT_NAME, MODEL_PREFIX

log = logging.getLogger(__name__)

_NAME = CHECKPOINT_NAME
_WEIGHTS = re.compile(r"^ckpt-(\d+)(\.[0-9a-f]{12})?\.safetensors$")  # see save_checkpoint
_TMP = re.compile(r"^\.(ckpt-\d+(\.[0-9a-f]{12})?\.(json|safetensors)|best\.json)\.tmp-\d+$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
BEST = "best.json"


class NonFiniteWeightsError(ValueError):
    """The model's weights hold NaN or infinity: they are not saved (the last good checkpoint stays)."""


def checkpoint_name(step: int) -> str:
    """The JSON file name of the checkpoint written at ``step``."""
    return f"ckpt-{step:08d}.json"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry is data of the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary beside ``path``, fsync it, rename it over ``path``, fsync
    the folder: a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
            ``"best"`` entry (naming its ``"checkpoint"``) is what ``best.json`` mirrors.
        best: this checkpoint is the run's best: ``best.json`` names it.
    Returns:
        the JSON file's path.
    Raises:
        NonFiniteWeightsError: a weight is NaN or infinite (nothing is written).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(run_dir)
    tensors = {f"{MODEL_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteWeightsError(
                f"{run_dir}: step {step}: weight {name[len(MODEL_PREFIX) :]} holds NaN or infinity; "
                "not saved (the last good checkpoint is kept)"
            )
    meta = dict(state)
    meta["step"] = step
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    rng_tensors, meta["rng"] = rng_state()
    tensors.update(rng_tensors)
    stem = Path(checkpoint_name(step)).stem
    blob = save_bytes(tensors)
    sha = hashlib.sha256(blob).hexdigest()
    # A second save at the same step (mid-epoch, then epoch end) must not replace the weights a
    # committed JSON names with other bytes: that pair would break until the new JSON lands.
    committed = _read_json_or_none(run_dir / f"{stem}.json")
    committed = committed if isinstance(committed, dict) else {}
    for name in (f"{stem}.safetensors", f"{stem}.{sha[:12]}.safetensors"):
        if name != committed.get("weights") or committed.get("weights_sha256") == sha:
            break
    meta.update(weights=name, weights_bytes=len(blob), weights_sha256=sha)
    _atomic_write(run_dir / name, blob)
    _atomic_write(run_dir / f"{stem}.json", json.dumps(meta, indent=1).encode())  # the commit
    old = committed.get("weights")
    if isinstance(old, str) and old != name and _WEIGHTS.match(old):  # superseded by the commit
        (run_dir / old).unlink(missing_ok=True)
    record = state.get("best") if isinstance(state.get("best"), dict) else None
    if best:
        record = {**(record or {}), "checkpoint": f"{stem}.json"}
    if record is not None and "checkpoint" in record and _read_json_or_none(run_dir / BEST) != record:
        _atomic_write(run_dir / BEST, json.dumps(record, indent=1).encode())
    kept = best_checkpoint(run_dir)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        if old == kept:
            continue
        weights = _weights_name(old)
        old.unlink(missing_ok=True)  # the JSON first: a JSON never outlives its weights
        if weights is not None:
            (run_dir / weights).unlink(missing_ok=True)
    log.info("saved checkpoint %s", run_dir / f"{stem}.json")
    return run_dir / f"{stem}.json"


def clean_partial(run_dir: str | Path) -> list[str]:
    """Remove what a killed save left in ``run_dir``: temporaries (``.ckpt-*.tmp-*``) and weights
    files no checkpoint JSON names. Returns the names removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    names = {p.name for p in run_dir.iterdir()}
    removed = []
    for name in sorted(names):
        if _TMP.match(name) or _is_orphan(run_dir, name, names):
            (run_dir / name).unlink(missing_ok=True)
            removed.append(name)
    if removed:
        log.info("%s: removed the leftovers of an interrupted save: %s", run_dir, ", ".join(removed))
    return removed


def _is_orphan(run_dir: Path, name: str, names: set[str]) -> bool:
    """A weights file with no JSON of its step, or one its step's (readable) JSON does not name.
    Beside an unreadable JSON it is kept: that is corruption to look at, not a killed save."""
    weights = _WEIGHTS.match(name)
    if weights is None:
        return False
    json_name = f"ckpt-{weights.group(1)}.json"
    if json_name not in names:
        return True
    meta = _read_json_or_none(run_dir / json_name)
    return isinstance(meta, dict) and meta.get("weights", f"ckpt-{weights.group(1)}.safetensors") != name


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def _weights_name(path: Path) -> str | None:
    """The weights file a checkpoint JSON names (None: unreadable or not a plain ckpt name)."""
    meta = _read_json_or_none(path)
    name = meta.get("weights", path.with_suffix(".safetensors").name) if isinstance(meta, dict) else None
    return name if isinstance(name, str) and _WEIGHTS.match(name) else None


def _is_complete(path: Path) -> bool:
    """Cheap completeness: the JSON parses and names a weights file of the recorded size."""
    meta = _read_json_or_none(path)
    name = _weights_name(path)
    if not isinstance(meta, dict) or name is None:
        return False
    try:
        size = (path.parent / name).stat().st_size
    except OSError:
        return False
    recorded = meta.get("weights_bytes")
    return recorded is None or recorded == size


def _candidates(run_dir: Path) -> list[Path]:
    """``ckpt-*.json`` files in ``run_dir``, oldest first (complete or not)."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (their JSON files) in ``run_dir``, oldest first."""
    return [p for p in _candidates(Path(run_dir)) if _is_complete(p)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``run_dir``, or None (only the newest ones are read)."""
    return next((p for p in reversed(_candidates(Path(run_dir))) if _is_complete(p)), None)


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
    """The run's best complete checkpoint, or None: the one the newest checkpoint's state names
    (committed with it), else the one ``best.json`` names."""
    run_dir = Path(run_dir)
    newest = latest_checkpoint(run_dir)
    candidates = []
    if newest is not None:
        record = (_read_json_or_none(newest) or {}).get("best")
        if isinstance(record, dict):
            candidates.append(record.get("checkpoint"))
    record = _read_json_or_none(run_dir / BEST)
    if isinstance(record, dict):
        candidates.append(record.get("checkpoint"))
    for name in candidates:
        if isinstance(name, str) and _NAME.match(name) and _is_complete(run_dir / name):
            return run_dir / name
    return None


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
    if (weights := _WEIGHTS.match(path.name)) is not None:
        path = path.with_name(f"ckpt-{weights.group(1)}.json")
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file or run directory")
    return path


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
            return f"rng: not a numpy / Python RNG state ({err})"
    return None


def _check_rng(rest: dict[str, Any]) -> None:
    """Apply the saved numpy and Python states to throw-away generators (raises if they do not fit)."""
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.RandomState().set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = rest["python"]
    random.Random().setstate((version, tuple(internal), gauss))


def read_meta(path: str | Path, best: bool = False) -> tuple[Path, dict[str, Any]]:
    """A checkpoint's JSON state without its tensors: (the JSON file, the state), validated."""
    path = resolve_checkpoint(path, best)
    try:
        limits.check("max_text_file_bytes", path.stat().st_size, path, "checkpoint state (bytes)")
        meta = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ValueError(f"{path}: cannot read checkpoint state ({reason})") from None
    problem = _meta_problem(meta)
    if problem is not None:
        raise ValueError(f"{path}: not a checkpoint state: {problem}")
    return path, meta


def load_checkpoint(path: str | Path, best: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint (see :func:`resolve_checkpoint`) -> (tensors, state).

    The weights file must have the size and SHA-256 its JSON records (checkpoints written before
    the checksum are read unverified); ``ValueError`` naming the file otherwise."""
    path, meta = read_meta(path, best)
    weights = path.with_name(meta.get("weights", path.with_suffix(".safetensors").name))
    try:
        blob = weights.read_bytes()
    except OSError as err:
        raise ValueError(f"{weights}: cannot read checkpoint weights ({err.strerror or err})") from None
    if "weights_bytes" in meta and len(blob) != meta["weights_bytes"]:
        raise ValueError(
            f"{weights}: {len(blob)} bytes, {path.name} records {meta['weights_bytes']}: incomplete or "
            "replaced weights"
        )
    if "weights_sha256" in meta and hashlib.sha256(blob).hexdigest() != meta["weights_sha256"]:
        raise ValueError(
            f"{weights}: SHA-256 differs from the one {path.name} records: the file is corrupt "
            "(delete this checkpoint's two files to use the previous one)"
        )
    try:
        tensors = load_bytes(blob)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights}: cannot read checkpoint weights ({err})") from None
    if "rng" in meta:
        state = tensors.get("rng/torch")
        if state is None or state.dtype != torch.uint8 or state.dim() != 1:
            raise ValueError(f"{weights}: rng/torch must be a 1-d uint8 tensor (the torch RNG state)")
        try:
            torch.Generator().set_state(state)
        except RuntimeError as err:
            raise ValueError(f"{weights}: rng/torch is not a torch RNG state ({err})") from None
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
            f"{meta.get('weights', 'checkpoint')}: does not fit {type(model).__name__}: "
            f"missing {missing[:5]}, "
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
