"""The engine end to end, in real processes: exact resume after SIGKILL, and 2-process DDP.

Both train the real digits classifier on scikit-learn's real handwritten digits through the
CLI (``python -m structpred train``), exactly as a user would.
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

BIN = Path(sys.executable).parent
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


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this interpreter")
    # No dropout: its masks would differ between one and two processes.
    common = ("--epochs", "1", "--model-arg", "width=8", "--model-arg", "dropout=0.0")
    one = tmp_path / "one"
    _run(["train", *_train_args(one, *common)[1:]])
    # Per-process batch 8 on 2 processes = global batch 16, as the single run's.
    two = tmp_path / "two"
    args = _train_args(two, *common)
    args[args.index("--batch-size") + 1] = "8"
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "structpred", *args],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(ckpt.list_checkpoints(two)) == 1  # only rank 0 writes
    w1, w2 = _weights(one), _weights(two)
    assert json.loads(ckpt.latest_checkpoint(one).read_text())["step"] == 75  # type: ignore[union-attr]
    assert json.loads(ckpt.latest_checkpoint(two).read_text())["step"] == 75  # type: ignore[union-attr]
    for name in w1:
        gap = (w1[name] - w2[name]).abs().max()
        assert torch.allclose(w1[name], w2[name], atol=1e-5, rtol=0), (name, gap)
