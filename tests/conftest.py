"""Suite-wide guards, and what makes the suite safe to run on several processes (pytest-xdist).

``make test`` runs ``pytest -n auto`` (one worker per core, ``--dist loadgroup`` from
pyproject.toml); ``pytest`` alone runs in one process as before. docs/testing.md explains the
choices; in short:

- each xdist worker gets ``cores // workers`` torch threads (1 on the 2-core CI machine), and the
  same count in ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for the subprocesses tests start (the
  CLI, torchrun), so that two workers never oversubscribe the cores;
- every test starts from the same random state (torch, numpy, ``random``), whatever ran before
  it in its process: under xdist the tests a worker ran before a given test change from run to
  run, so a test drawing unseeded random inputs would otherwise see different ones each run;
- the tests of a module that share a module-scoped fixture (a trained run, a built data set)
  go to one worker, so that the fixture is built once, not once per worker.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

# The random state every test starts from (torch's own default seed at interpreter start).
TEST_SEED = 67280421310721


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker: ``cores // workers`` torch threads, and the same for subprocesses
    (unless the caller set OMP_NUM_THREADS / MKL_NUM_THREADS itself)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:  # one process: torch's default (one thread per core), as before xdist
        return
    threads = max(1, _cores() // max(1, int(workers)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use a module-scoped fixture of their module share one xdist group (one worker):
    the fixture is then built once. A no-op without ``--dist loadgroup``."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group") is not None:
            continue
        module = item.nodeid.split("::")[0]
        for name in info.names_closure:
            defs = info.name2fixturedefs.get(name, ())
            if any(d.scope in ("module", "class") and d.baseid.split("::")[0] == module for d in defs):
                item.add_marker(pytest.mark.xdist_group(module))
                break


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The same random state before every test (and before its fixtures are built)."""
    torch.manual_seed(TEST_SEED)
    np.random.seed(TEST_SEED % 2**32)
    random.seed(TEST_SEED)


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """A test that changes torch's thread count (benchmark smoke runs do) must not change it for
    the tests after it: float sums, and so tie orders in sorts, depend on the thread count."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
