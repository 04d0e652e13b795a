"""Two ``torchrun`` agents as two nodes on this machine (c10d rendezvous on localhost), for the
multi-node tests. Imported inside the tests only: their files also run as torchrun workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def launch_two_nodes(script: str, args: list[str], rdzv_id: str) -> list[subprocess.Popen[str]]:
    """Start two agents (``--nnodes 2``, one process each) running ``script args``; stderr kept."""
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = free_port()
    return [
        subprocess.Popen(
            [
                str(torchrun),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"localhost:{port}",
                "--rdzv-id",
                rdzv_id,
                "--node-rank",
                str(k),
                script,
                *args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k in range(2)
    ]


def wait_all(agents: list[subprocess.Popen[str]], timeout: float = 300) -> None:
    """Wait for every agent; assert each exited 0 (the end of its stderr otherwise)."""
    for agent in agents:
        _, err = agent.communicate(timeout=timeout)
        assert agent.returncode == 0, err[-3000:]
