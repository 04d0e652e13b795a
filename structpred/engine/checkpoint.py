"""Checkpoints: safetensors for every tensor, JSON for everything else; atomic; keep-last-N.

A checkpoint ``ckpt-<step>`` is two files in the run directory:

- ``ckpt-<step>.safetensors`` — model weights (``model/…``), the weight EMA if the run keeps one
  (``ema/…``, :mod:`.ema`), optimizer tensors (``optim/…``, e.g. momentum buffers) and the torch
  RNG states (``rng/…``);
- ``ckpt-<step>.json`` — config, epoch, step, step within the epoch, optimizer scalars and
  parameter groups, numpy and Python RNG states, the EMA's decay, tau and update count (``ema``),
  the metrics so far, and the weights file's
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
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor

from ..data import limits
from ..models.weights.load import CHECKPOINT_NAME, MODEL_PREFIX
from .checkpoint_state import _WEIGHTS, _meta_problem, _split_optimizer, rng_state
from .checkpoint_state import model_state as model_state  # re-exported: ckpt.restore(...) etc.
from .checkpoint_state import restore as restore
from .checkpoint_state import restore_optimizer as restore_optimizer
from .checkpoint_state import set_rng_state as set_rng_state
from .ema import ModelEMA

log = logging.getLogger(__name__)

_NAME = CHECKPOINT_NAME
_TMP = re.compile(r"^\.(ckpt-\d+(\.[0-9a-f]{12})?\.(json|safetensors)|best\.json)\.tmp-\d+$")
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


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep_last: int = 3,
    best: bool = False,
    ema: ModelEMA | None = None,
) -> Path:
    """Write ``ckpt-<step>`` atomically and delete all but the newest ``keep_last`` (and the best).

    Args:
        state: JSON-able training state (epoch, step_in_epoch, config, metrics...); its
            ``"best"`` entry (naming its ``"checkpoint"``) is what ``best.json`` mirrors.
        best: this checkpoint is the run's best: ``best.json`` names it.
        ema: the run's weight average, saved beside the raw weights (``ema/…`` + ``ema``).
    Returns:
        the JSON file's path.
    Raises:
        NonFiniteWeightsError: a weight is NaN or infinite (nothing is written).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(run_dir)
    tensors = {f"{MODEL_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(ema.tensors())
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteWeightsError(
                f"{run_dir}: step {step}: weight {name} holds NaN or infinity; "
                "not saved (the last good checkpoint is kept)"
            )
    meta = dict(state)
    meta["step"] = step
    if ema is not None:
        meta["ema"] = ema.state()
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


def read_meta(path: str | Path, best: bool = False) -> tuple[Path, dict[str, Any]]:
    """A checkpoint's JSON state without its tensors: (the JSON file, the state), validated."""
    path = resolve_checkpoint(path, best)
    try:
        limits.check("max_text_file_bytes", path.stat().st_size, path, "checkpoint state (bytes)")
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON, bad UTF-8, a 5,000-digit int
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
