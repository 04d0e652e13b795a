"""Kill -9 trials: SIGKILL a real training at random instants, resume it, compare bit for bit.

``OMP_NUM_THREADS=1 python experiments/kill_resume.py --trials 20``

One uninterrupted run of a tiny ``structpred train`` (the digits CNN, width 4, on scikit-learn's
real digits at 16 x 16, batch 100: 12 steps an epoch, 3 epochs) is the reference. It saves a
checkpoint after **every** step (``--checkpoint-every 1``, ``--keep-last 2``), so saving, pruning
old checkpoints and re-syncing ``best.json`` take a large share of the run and random kills land
inside them often. Each trial starts the same command in a fresh folder, picks a uniform random
step ``k`` of the run, waits until checkpoint ``k`` appears (``k = 0``: until the run folder
appears, i.e. training started), sleeps a uniform random delay of up to one step's time (the
reference's training time over its steps), sends SIGKILL, records what the kill left behind
(temporary files, weights without their JSON), then runs the same command with ``--resume`` to
the end. The final checkpoint's model and optimizer
tensors are compared with the reference's with ``torch.equal`` (bit for bit).

Prints one line per trial and the totals: trials, identical, different, and where the kills
landed (before the first checkpoint, inside a save = a leftover was found, between saves, after
the run ended). The exit code is 1 if any trial differs.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from structpred.engine import checkpoint as ckpt

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = (
    "--model", "digits_cnn", "--model-arg", "width=4", "--model-arg", "input_size=16",
    "--data", "digits", "--data-arg", "size=16", "--batch-size", "100", "--epochs", "3",
    "--lr", "0.05", "--seed", "1", "--checkpoint-every", "1", "--keep-last", "2", "--no-progress",
)  # fmt: skip


def command(out: Path, *extra: str) -> list[str]:
    """``python -m structpred train`` with the trial's settings into ``out``."""
    return [sys.executable, "-m", "structpred", "train", *TRAIN, "--out", str(out), *extra]


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    """The newest checkpoint's model and optimizer tensors (checksum verified)."""
    tensors, _ = ckpt.load_checkpoint(run)
    return {k: v for k, v in tensors.items() if not k.startswith("rng/")}


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names, dtypes, shapes and bits."""
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def run_to_end(args: list[str], timeout: float) -> None:
    """Run a command; raise with its stderr if it fails."""
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def start_and_wait(out: Path, timeout: float) -> tuple[subprocess.Popen, float]:
    """Start a run; return it once its folder exists (training started) and that instant."""
    with open(out.parent / f"{out.name}.stderr", "wb") as err:  # the child keeps its own handle
        proc = subprocess.Popen(command(out), env=ENV, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + timeout
    while not out.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the run into {out} ended or stalled before training started")
        time.sleep(0.002)
    return proc, time.monotonic()


def newest_step(run: Path) -> int:
    """The highest step of a checkpoint JSON in ``run`` (0: none yet); cheap enough to poll."""
    steps = [int(n[5:13]) for n in os.listdir(run) if n.startswith("ckpt-") and n.endswith(".json")]
    return max(steps, default=0)


def leftovers(run: Path) -> list[str]:
    """What an interrupted save leaves: temporaries and weights files without their JSON."""
    names = {p.name for p in run.iterdir()} if run.is_dir() else set()
    return sorted(
        n for n in names if ".tmp-" in n or (n.endswith(".safetensors") and f"{n[:13]}.json" not in names)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="kill-and-resume trials")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill delays")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per process")
    parser.add_argument("--keep", default=None, help="keep the runs in this folder (default: a temp folder)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(args.keep or tempfile.mkdtemp(prefix="kill_resume_"))
    root.mkdir(parents=True, exist_ok=True)

    proc, began = start_and_wait(root / "reference", args.timeout)
    proc.wait(timeout=args.timeout)
    span = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed (exit {proc.returncode}): see {root}/reference.stderr")
    reference = final_tensors(root / "reference")
    steps = ckpt.read_meta(root / "reference")[1]["step"]
    print(
        f"reference: {steps} steps, a checkpoint each; {span:.2f} s of training ({span / steps:.2f} s a step)"
    )

    counts = {"identical": 0, "different": 0}
    landed = {"before the first checkpoint": 0, "inside a save": 0, "between saves": 0, "after the end": 0}
    for trial in range(args.trials):
        out = root / f"trial{trial:03d}"
        target, delay = rng.randrange(steps), rng.uniform(0.0, span / steps)
        proc, _ = start_and_wait(out, args.timeout)
        while proc.poll() is None and newest_step(out) < target:  # reach step `target` ...
            time.sleep(0.001)
        time.sleep(delay)  # ... then up to one step's time further
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=args.timeout)
        killed = proc.returncode == -signal.SIGKILL
        left = leftovers(out)
        newest = ckpt.latest_checkpoint(out)
        at = ckpt.read_meta(newest)[1]["step"] if newest is not None else 0
        where = (
            "after the end" if not killed
            else "inside a save" if left
            else "before the first checkpoint" if newest is None
            else "between saves"
        )  # fmt: skip
        landed[where] += 1
        if killed:
            run_to_end(command(out, "--resume"), args.timeout)
        same = identical(reference, final_tensors(out))
        counts["identical" if same else "different"] += 1
        print(
            f"trial {trial + 1:3d}: kill {delay:4.2f} s after checkpoint {target:2d}, {where} "
            f"(newest complete: step {at}"
            f"{'; left ' + ', '.join(left) if left else ''}) -> {'identical' if same else 'DIFFERENT'}",
            flush=True,
        )
    print(f"trials {args.trials}  identical {counts['identical']}  different {counts['different']}")
    print("kills landed: " + ", ".join(f"{k} {v}" for k, v in landed.items()))
    print(f"runs in {root}")
    return 1 if counts["different"] else 0


if __name__ == "__main__":
    sys.exit(main())
