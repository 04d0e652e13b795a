"""The engine end to end, in real processes: exact resume after SIGKILL.

It trains the real digits classifier on scikit-learn's real handwritten digits through the CLI
(``python -m structpred train``), exactly as a user would. Data parallel runs (torchrun, one
node or two) are tested in ``test_ddp.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from structpred.engine import checkpoint as ckpt

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train_args(out: Path, *extra: str) -> list[str]:
    return [
        "train", "--model", "digits_cnn", "--data", "digits", "--batch-size", "16", "--lr", "0.05",
        "--seed", "3", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_checkpoint(run)
    return ckpt.model_state(tensors)


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "structpred", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_resume_after_sigkill_gives_the_same_weights(tmp_path: Path) -> None:
    common = ("--epochs", "2", "--checkpoint-every", "7", "--model-arg", "width=16")
    _run(_train_args(tmp_path / "straight", *common))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "structpred", *_train_args(killed, *common)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 180
    try:
        # Kill as soon as a mid-epoch checkpoint exists (epoch 0 has 75 steps; one every 7).
        while time.time() < deadline and proc.poll() is None:
            newest = ckpt.latest_checkpoint(killed)
            if newest is not None and json.loads(newest.read_text())["step"] >= 14:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    newest = ckpt.latest_checkpoint(killed)
    assert newest is not None
    meta = json.loads(newest.read_text())
    assert meta["epoch"] == 0 and 0 < meta["step_in_epoch"] < 75, meta  # killed mid-epoch

    _run(_train_args(killed, *common, "--resume"))
    straight, resumed = _weights(tmp_path / "straight"), _weights(killed)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    # The resumed run's log continues the killed one's: one row per logged step, no repeats.
    rows = (killed / "log.csv").read_text().splitlines()[1:]
    train_steps = [row.split(",")[0] for row in rows if ",train," in row]
    assert train_steps and len(train_steps) == len(set(train_steps))
