"""A run killed at a deterministic point INSIDE a checkpoint save resumes to bit-identical weights.

The kill is simulated in-process: the save's writer (``checkpoint._atomic_write``) or its
pruning (``Path.unlink``) raises :class:`Killed`, a ``BaseException`` no handler of the library
catches, at the N-th call, leaving the run directory exactly as a SIGKILL at that instant would
(the temporary is fsynced before its rename, so a half-written temporary is the worst a kill
leaves; ``partial`` writes one). A fresh trainer then resumes from the directory. Real SIGKILLs
at random instants: ``experiments/kill_resume.py``.

The run: 2 epochs of 2 steps, a checkpoint after every step (the epoch's last one after its
validation), ``keep_last=1`` (each save prunes the one before unless it is the best),
``best.json`` written at the first epoch end. A kill point is the write of one file name (at
three moments of it), or the pruning of a JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from structpred.engine import TrainConfig, Trainer
from structpred.engine import checkpoint as ckpt
from structpred.engine.trainer import seed_everything
from structpred.metrics.classification import Accuracy
from structpred.models import get_model


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no ``except Exception`` catches it)."""


class _Digits(Dataset):
    """``n`` fixed random 16 x 16 images with labels 0-9 (no reader: the engine is under test)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 16, 16, generator=g)
        self.labels = torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.images[i], {"labels": self.labels[i]}


def _fit(out: Path, resume: bool = False) -> Trainer:
    seed_everything(0)
    model = get_model("digits_cnn", width=4, input_size=16)
    config = TrainConfig(
        epochs=2, batch_size=16, lr=0.05, progress=False, checkpoint_every=1, keep_last=1, log_every=1000
    )
    trainer = Trainer(model, _Digits(32, 1), _Digits(16, 2), config, out, metric=lambda: Accuracy(10))
    trainer.fit(resume=resume)
    return trainer


def _final(out: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_checkpoint(out)  # checksum verified
    return {k: v for k, v in tensors.items() if not k.startswith("rng/")}  # model + optimizer


def _kill_writer(name: str, mode: str) -> Callable[[Path, bytes], None]:
    """``_atomic_write`` that dies at the write of ``name``: ``partial`` (half the bytes in the
    temporary), ``before_rename`` (whole temporary, not renamed) or ``after_rename``."""
    real = ckpt._atomic_write

    def write(path: Path, data: bytes) -> None:
        if path.name != name:
            return real(path, data)
        tmp = path.with_name(f".{path.name}.tmp-4242")
        if mode == "partial":
            tmp.write_bytes(data[: len(data) // 2])
        elif mode == "before_rename":
            tmp.write_bytes(data)
        else:
            real(path, data)
        raise Killed(f"{mode} of {path.name}")

    return write


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """The uninterrupted run: final tensors, the files it leaves, its best.json."""
    out = tmp_path_factory.mktemp("straight")
    _fit(out)
    return _final(out), _files(out), (out / "best.json").read_text()


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith((".", "ckpt-")))


@pytest.mark.parametrize(
    ("name", "mode", "left"),
    [
        ("ckpt-00000001.safetensors", "partial", ".ckpt-00000001.safetensors.tmp-4242"),  # nothing saved yet
        ("ckpt-00000002.safetensors", "after_rename", "ckpt-00000002.safetensors"),  # JSON not written
        ("ckpt-00000002.json", "after_rename", None),  # committed; best.json not yet re-synced
        ("best.json", "partial", ".best.json.tmp-4242"),  # best.json half-way
        ("ckpt-00000004.json", "before_rename", ".ckpt-00000004.json.tmp-4242"),  # the run's last
    ],
)
def test_a_kill_inside_a_save_resumes_bit_identical(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reference: tuple[dict[str, torch.Tensor], list[str], str],
    name: str,
    mode: str,
    left: str | None,
) -> None:
    with monkeypatch.context() as m:
        m.setattr(ckpt, "_atomic_write", _kill_writer(name, mode))
        with pytest.raises(Killed):
            _fit(tmp_path)
    if left is not None:
        assert (tmp_path / left).is_file()
    _fit(tmp_path, resume=True)
    tensors, files, best = reference
    resumed = _final(tmp_path)
    assert resumed.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(resumed[key], value), key
    assert _files(tmp_path) == files  # leftovers cleaned, the same checkpoints kept
    assert (tmp_path / "best.json").read_text() == best


def test_a_kill_between_pruning_the_json_and_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: tuple[dict[str, torch.Tensor], list[str], str]
) -> None:
    real, calls = Path.unlink, [0]

    def unlink(self: Path, missing_ok: bool = False) -> Any:
        real(self, missing_ok=missing_ok)
        if self.name == "ckpt-00000001.json":  # pruned when step 2 is saved: its weights next
            calls[0] += 1
            raise Killed("between the two unlinks")

    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", unlink)
        with pytest.raises(Killed):
            _fit(tmp_path)
    assert (tmp_path / "ckpt-00000001.safetensors").is_file() and calls[0] == 1
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000002.json"
    _fit(tmp_path, resume=True)
    resumed = _final(tmp_path)
    assert all(torch.equal(resumed[k], v) for k, v in reference[0].items())
    assert _files(tmp_path) == reference[1]  # the orphaned weights are gone
