"""Weights in from a file: ``load_weights(model, path)`` fills an already built model.

Sources, told apart by the path and the tensor names in the file:

- **ours**: a run directory (its newest ``ckpt-*.json``), a ``ckpt-*.json`` or its
  ``.safetensors`` file, as :mod:`structpred.engine.checkpoint` writes them (the model's tensors
  under ``model/``). Read here directly, so the models layer does not import the engine; a test
  writes a checkpoint with the engine and reads it back with this module.
- **torchvision**: a ``torch.save(tv_model.state_dict())`` file (``.pth`` / ``.pt``, or a
  ``.safetensors`` of the same names), read with ``torch.load(weights_only=True)`` (nothing is
  unpickled that could run code). Faster / Mask R-CNN, FCN / DeepLabV3 and RAFT (e.g. torchvision's
  ``raft_large_C_T_SKHT_V2-ff5fadd5.pth`` into ``raft_large``), renamed by the same
  rules as :func:`~structpred.models.weights.from_torchvision`. A ``{"model": state_dict, ...}``
  file (torchvision's reference training scripts) is unwrapped.
- **timm**: a ``state_dict`` file of timm's ViT / Swin classifiers (``.pth`` / ``.bin`` /
  ``.safetensors``, as timm and the Hugging Face hub save them), by the families' rules.

Every tensor goes through the one strict renamer (:func:`~.renamer.copy_renamed`): a missing,
unexpected or differently shaped tensor is an error naming it and both shapes. The one exception
is the standard fine-tuning recipe: tensors whose shape depends on the number of classes
(:mod:`.class_dependent`) keep the model's fresh initialisation when their shape differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .class_dependent import class_dependent_patterns
from .families import TIMM_FAMILIES, TORCHVISION_FAMILIES
from .renamer import Rule, copy_renamed, rename_all

logger = logging.getLogger(__name__)

__all__ = ["WeightsReport", "load_weights"]

# The checkpoint format of structpred.engine.checkpoint (tested against it).
# The checkpoint format of structpred.engine.checkpoint, which imports these two (one place):
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)\.json$")  # ckpt-<step>.json beside ckpt-<step>.safetensors
MODEL_PREFIX = "model/"  # the model's tensors in the safetensors file: model/<state_dict name>
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_IDENTITY: tuple[Rule, ...] = ((r"(.+)", r"\1"),)
Shape = tuple[int, ...]


@dataclass
class WeightsReport:
    """What :func:`load_weights` did; ``str(report)`` is the text the CLI prints."""

    kind: str  # "ours", "torchvision" or "timm"
    file: Path
    family: str  # e.g. "torchvision Faster R-CNN", "ours: fasterrcnn_narrow_fpn"
    loaded: int  # tensors copied from the file
    num_classes: int | None = None  # the model's, when it has one
    # (our name, our shape, the file's shape) of each re-initialised tensor
    reinitialised: list[tuple[str, Shape, Shape]] = field(default_factory=list)

    @property
    def reinitialised_names(self) -> list[str]:
        """Names of the re-initialised tensors."""
        return [name for name, _, _ in self.reinitialised]

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.file} ({self.family})"]
        if self.reinitialised:
            known = self.num_classes is not None
            plural = "" if self.num_classes == 1 else "es"
            what = f"for {self.num_classes} class{plural}" if known else "(class count differs)"
            shapes = ", ".join(
                f"{name} {list(mine)} (file: {list(theirs)})" for name, mine, theirs in self.reinitialised
            )
            lines.append(f"re-initialised {what}: {shapes}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading


def _checkpoint_json(path: Path) -> Path:
    """The newest ``ckpt-*.json`` in the run directory ``path``."""
    found = [p for p in path.iterdir() if CHECKPOINT_NAME.match(p.name)]
    if not found:
        raise ValueError(f"{path}: no checkpoint (ckpt-*.json) in this directory")
    return max(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err


def _read_torch(path: Path) -> dict[str, Tensor]:
    """A ``torch.save``d state dict (or ``{"model": state_dict, ...}``), without unpickling code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, a pickled Module, not a torch file at all...
        first = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(
            f"{path}: not a readable torch.save state dict ({type(err).__name__}: {first})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: expected a state dict (tensor name -> tensor), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict: entries {bad[:5]} are not name -> tensor")
    return dict(obj)


def _read(path: Path) -> tuple[str, Path, dict[str, Tensor], dict[str, Any]]:
    """``(kind, file read, tensors, checkpoint state)``; kind ``"ours"`` or ``"state_dict"``."""
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    if path.is_dir():
        path = _checkpoint_json(path)
    if path.suffix == ".json":
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as err:  # bad JSON or UTF-8, huge ints, deep nesting
            reason = f"{type(err).__name__}: {str(err)[:200]!r}"
            raise ValueError(f"{path}: cannot read checkpoint state ({reason})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: not a checkpoint state (a JSON object), got {type(meta).__name__}")
        name = meta.get("weights", path.with_suffix(".safetensors").name)
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"{path}: weights must name a file beside it, got {name!r}")
        weights = path.with_name(name)
        tensors = _read_safetensors(weights)
        sha = meta.get("weights_sha256")  # engine.checkpoint records it (older checkpoints: none)
        if sha is not None and hashlib.sha256(weights.read_bytes()).hexdigest() != sha:
            raise ValueError(
                f"{weights}: SHA-256 differs from the one {path.name} records: the file is corrupt"
            )
        if not any(k.startswith(MODEL_PREFIX) for k in tensors):
            raise ValueError(f"{weights}: no model tensors ({MODEL_PREFIX}...) in this checkpoint")
        return "ours", weights, tensors, meta
    if path.suffix == ".safetensors":
        tensors = _read_safetensors(path)
        if any(k.startswith(MODEL_PREFIX) for k in tensors):
            state = path.with_suffix(".json")
            try:
                meta = json.loads(state.read_text()) if state.is_file() else {}
            except (OSError, ValueError, RecursionError):
                meta = {}  # the tensors are complete without it; only the report's family name is lost
            return "ours", path, tensors, meta if isinstance(meta, dict) else {}
        return "state_dict", path, tensors, {}
    if path.suffix in _TORCH_SUFFIXES:
        return "state_dict", path, _read_torch(path), {}
    raise ValueError(
        f"{path}: not a weights file; expected a run directory, ckpt-*.json, .safetensors, "
        f"or a torch.save state dict ({', '.join(_TORCH_SUFFIXES)})"
    )


# ----------------------------------------------------------------------------- loading


def _state_plan(
    model: nn.Module, names: Mapping[str, Tensor], file: Path
) -> tuple[str, str, tuple[Rule, ...], tuple[str, ...], dict[str, Tensor]]:
    """``(kind, family, rules, skip, state)`` for a plain state dict, by its tensor names and our
    model; ``state`` is the file's tensors after the family's ``adapt_state`` (if any)."""
    for kind, families in (("torchvision", TORCHVISION_FAMILIES), ("timm", TIMM_FAMILIES)):
        for module in families:
            if module.recognises_state(names):
                family = module.state_family(names)
                try:
                    rules, skip = module.state_rules(model, names)
                    adapt = getattr(module, "adapt_state", None)  # e.g. positions saved at another size
                    state = adapt(model, names) if adapt is not None else dict(names)
                except ValueError as err:
                    raise ValueError(
                        f"{file}: {family} weights do not fit {type(model).__name__}: {err}"
                    ) from None
                return kind, family, rules, skip, state
    shown = ", ".join(sorted(names)[:4])
    supported = ", ".join(
        [f"torchvision {module.SUPPORTED}" for module in TORCHVISION_FAMILIES]
        + [f"timm {module.SUPPORTED}" for module in TIMM_FAMILIES]
    )
    raise ValueError(
        f"{file}: a state dict of no supported family ({shown}, ...); supported: our checkpoints, {supported}"
    )


def load_weights(model: nn.Module, path: str | Path) -> WeightsReport:
    """Fill ``model`` (built with the user's number of classes) from the weights file ``path``.

    ``path``: a run directory, ``ckpt-*.json`` / ``.safetensors`` of ours, or a torchvision or
    timm ``state_dict`` file (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``). Tensors that
    depend on the number of classes keep the model's fresh initialisation when the file's shape
    differs; every other tensor must match by name and shape. On error nothing is copied.

    Raises:
        ValueError: no such file, not a weights file, a truncated or unreadable file, a state
            dict of another family, or a missing /
            unexpected / differently shaped tensor (named, with both shapes).
    """
    path = Path(path)
    kind, file, tensors, meta = _read(path)
    if kind == "ours":
        state = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        name = config.get("model_name") if config else None
        family, rules = f"ours: {name}" if name else "ours", _IDENTITY
        skip: tuple[str, ...] = ()
    else:
        kind, family, rules, skip, state = _state_plan(model, tensors, file)
    reinit = class_dependent_patterns(model)
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        copied = copy_renamed(model, state, rules, skip=skip, reinit=reinit)
    except ValueError as err:
        raise ValueError(f"{file} ({family}) does not fit {type(model).__name__}: {err}") from err
    renamed = rename_all(state, rules, skip)
    kept = {dst: tuple(state[src].shape) for src, dst in renamed.items() if src not in copied}
    reinitialised = [(dst, shape, kept[dst]) for dst, shape in mine.items() if dst in kept]  # our order
    num_classes = getattr(model, "num_classes", None)
    report = WeightsReport(
        kind, file, family, len(copied), num_classes if isinstance(num_classes, int) else None, reinitialised
    )
    logger.info("%s", report)
    return report
