"""One process vs ``torchrun`` (2 processes on one node, and 2 nodes of 1 process each):
``OMP_NUM_THREADS=1 python experiments/ddp_equality.py [--models a,b] [--bn] [--out DIR]``.

Every run goes through the CLI (``python -m structpred train``) exactly as a user's would, with
the same seed and the same *global* batch: ``--batch-size B`` on one process, ``B/2`` per process
on two. Printed per model: the largest ``|w_1 - w_N|`` over every weight and buffer of the final
checkpoints (0 = bit-identical), for

* ``procs``: ``torchrun --standalone --nproc-per-node 2``;
* ``nodes``: two ``torchrun`` agents as two nodes on this machine (``--nnodes 2
  --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint localhost:PORT``, one ``--node-rank``
  each), so local rank 0 on both and global ranks 0 and 1;
* ``nodes resumed``: the same two nodes killed (SIGKILL to both agents' process groups) after
  their first mid-run checkpoint and restarted with ``--resume``; compared with ``nodes``
  (must be 0) and with one process;

and the checkpoint files each run wrote (global rank 0 alone writes them).
Models: ``digits_cnn`` (no batch norm, dropout 0: exact), ``deeplab_narrow`` (trainable batch
norm, synchronised under torchrun; dropout 0) and ``fasterrcnn_narrow_fpn`` (trainable batch
norm + the RPN/RoI samplers' random draws). ``--bn`` adds the test's batch-norm classifier with
synchronised and with per-process batch norm. See docs/distributed.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from structpred.engine import checkpoint as ckpt

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

SHAPES = ("--data", "shapes", "--data-arg", "num_images=32", "--image-size", "64")
CASES: dict[str, tuple[tuple[str, ...], int]] = {  # CLI flags, global batch
    "digits_cnn": (("--model", "digits_cnn", "--data", "digits", "--model-arg", "width=8",
                    "--model-arg", "dropout=0.0"), 16),
    "deeplab_narrow": (("--model", "deeplab_narrow", *SHAPES, "--model-arg", "dropout=0.0"), 4),
    "fasterrcnn_narrow_fpn": (("--model", "fasterrcnn_narrow_fpn", *SHAPES), 4),
}  # fmt: skip
COMMON = ("--epochs", "2", "--lr", "0.01", "--seed", "3", "--no-progress", "--eval-every", "2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def _train(flags: tuple[str, ...], batch: int, out: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "structpred",
        "train",
        *flags,
        *COMMON,
        "--batch-size",
        str(batch),
        "--out",
        str(out),
        *extra,
    ]


def _node_cmds(args: list[str], run_id: str) -> list[list[str]]:
    port = _free_port()
    return [
        [str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", run_id, "--node-rank", str(k), *args]
        for k in range(2)
    ]  # fmt: skip


def _wait(procs: list[subprocess.Popen], what: str) -> None:
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"{what} failed ({p.returncode}):\n{err[-3000:]}")


def _start(cmds: list[list[str]]) -> list[subprocess.Popen]:
    # Own process group per agent: a kill reaches the agent and its worker, nothing else.
    return [
        subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
        for c in cmds
    ]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_checkpoint(run)
    return ckpt.model_state(tensors)


def max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over every floating tensor of two state dicts."""
    if a.keys() != b.keys():
        raise ValueError("the two checkpoints hold different tensors")
    gaps = [(a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()]
    return max(gaps, default=0.0)


def run_model(name: str, root: Path) -> dict[str, object]:
    """The runs of one model; its figures."""
    flags, batch = CASES[name]
    one, procs, nodes, resumed = (root / name / k for k in ("one", "procs", "nodes", "resumed"))
    tic = time.perf_counter()
    _wait(_start([[sys.executable, *_train(flags, batch, one)]]), f"{name} one process")
    half = _train(flags, batch // 2, procs)
    _wait(_start([[str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", *half]]), f"{name} procs")
    _wait(_start(_node_cmds(_train(flags, batch // 2, nodes), f"{name}-nodes")), f"{name} nodes")
    # Killed after the first mid-run checkpoint, then both nodes restarted with --resume.
    every = max(json.loads(ckpt.latest_checkpoint(one).read_text())["step"] // 4, 1)  # type: ignore[union-attr]
    agents = _start(
        _node_cmds(_train(flags, batch // 2, resumed, "--checkpoint-every", str(every)), f"{name}-r")
    )
    deadline = time.time() + 1800
    while time.time() < deadline and all(a.poll() is None for a in agents):
        newest = ckpt.latest_checkpoint(resumed)
        if newest is not None and json.loads(newest.read_text())["step"] >= every:
            break
        time.sleep(0.01)
    killed_at = json.loads(ckpt.latest_checkpoint(resumed).read_text())["step"]  # type: ignore[union-attr]
    for a in agents:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=60)
    restart = ["-m", "structpred", "train", "--resume", "--out", str(resumed), "--no-progress"]
    _wait(_start(_node_cmds(restart, f"{name}-r2")), f"{name} resumed nodes")
    w = {k: _weights(p) for k, p in (("one", one), ("procs", procs), ("nodes", nodes), ("resumed", resumed))}
    steps = {k: json.loads(ckpt.latest_checkpoint(p).read_text())["step"] for k, p in  # type: ignore[union-attr]
             (("one", one), ("procs", procs), ("nodes", nodes), ("resumed", resumed))}  # fmt: skip
    return {
        "model": name,
        "steps": steps,
        "procs_vs_one": max_gap(w["one"], w["procs"]),
        "nodes_vs_one": max_gap(w["one"], w["nodes"]),
        "nodes_vs_procs": max_gap(w["procs"], w["nodes"]),
        "resumed_vs_nodes": max_gap(w["nodes"], w["resumed"]),
        "resumed_vs_one": max_gap(w["one"], w["resumed"]),
        "killed_at_step": killed_at,
        "checkpoints": {k: len(ckpt.list_checkpoints(p)) for k, p in (("procs", procs), ("nodes", nodes))},
        "seconds": round(time.perf_counter() - tic, 1),
    }


def run_bn_classifier(root: Path) -> dict[str, object]:
    """The test's batch-norm classifier (tests/engine/test_ddp.py, 48 digits, 2 epochs of 3 steps):
    one process (batch 16) vs 2 processes (8 each) with synchronised and with local batch norm."""
    worker = Path(__file__).resolve().parents[1] / "tests" / "engine" / "test_ddp.py"
    runs = {k: root / "bn_classifier" / k for k in ("one", "synced", "local")}
    two = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", str(worker)]
    _wait(_start([[sys.executable, str(worker), str(runs["one"]), "16"]]), "bn_classifier one")
    _wait(_start([[*two, str(runs["synced"]), "8"]]), "bn_classifier synced")
    _wait(_start([[*two, str(runs["local"]), "8", "local-bn"]]), "bn_classifier local")
    w = {k: _weights(p) for k, p in runs.items()}
    return {"synced_vs_one": max_gap(w["one"], w["synced"]), "local_vs_one": max_gap(w["one"], w["local"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary one)")
    parser.add_argument("--bn", action="store_true", help="also: synchronised vs per-process batch norm")
    a = parser.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="ddp_equality_"))
    print(f"{'model':<24}{'procs-one':>12}{'nodes-one':>12}{'nodes-procs':>13}{'resumed-nodes':>15}"
          f"{'resumed-one':>13}  steps  ckpts  s")  # fmt: skip
    if a.bn:
        r = run_bn_classifier(root)
        print(f"bn_classifier: 2 processes vs one, batch norm synchronised {r['synced_vs_one']:.3g}, "
              f"per-process {r['local_vs_one']:.3g}", flush=True)  # fmt: skip
    for name in filter(None, a.models.split(",")):
        r = run_model(name, root)
        print(f"{name:<24}{r['procs_vs_one']:>12.3g}{r['nodes_vs_one']:>12.3g}{r['nodes_vs_procs']:>13.3g}"
              f"{r['resumed_vs_nodes']:>15.3g}{r['resumed_vs_one']:>13.3g}  {r['steps']['one']}"
              f"  {r['checkpoints']}  {r['seconds']}", flush=True)  # fmt: skip
        print("  " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
