"""Run fuzz campaigns: a supervisor process and a worker child that reads the inputs.

    python -m tests.fuzz.runner --seconds 600 --save            # make fuzz: every reader, 10 min each
    python -m tests.fuzz.runner --readers coco yolo --seconds 60 --jobs 2
    python -m tests.fuzz.runner --examples 20                   # derandomised: example n is fixed
    python -m tests.fuzz.runner --replay tests/fuzz/regressions

The worker sets every target up once, then for example ``n`` takes target ``n % len(targets)``
and a PRNG seeded by ``(seed, n)`` (so a run is reproducible and restartable), writes the input
where the target expects it and reads it, printing ``R n`` before and ``D n outcome`` after.
The supervisor watches: a worker that dies (a native crash), stays on one example longer than
``--hang`` seconds, or grows past ``--rss-mb`` is killed, the input is kept as a crash, and a
new worker resumes at ``n + 1``. Python-level crashes (see :func:`targets.outcome`) are
reported by the worker. ``--save`` keeps each distinct crash under ``regressions/<reader>/``.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[2]
CLEAN = ("ok", "error")
FUZZ_MAX_PIXELS = 20_000_000  # the workers' pixel limit (the library default is 10^8)


@dataclass
class Crash:
    """One crashing input."""

    target: str
    kind: str
    detail: str
    data: bytes
    index: int  # the example (or replayed file) number


@dataclass
class Stats:
    """What one campaign did."""

    reader: str
    examples: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    crashes: list[Crash] = field(default_factory=list)
    seconds: float = 0.0
    restarts: int = 0
    results: dict[int, str] = field(default_factory=dict)  # example number -> outcome

    def distinct(self) -> dict[str, Crash]:
        """Crashes by (target, kind, the detail with numbers and paths blanked)."""
        out: dict[str, Crash] = {}
        for c in self.crashes:
            key = f"{c.target}|{c.kind}|{re.sub(r'/[^ :]*|[0-9]+', '#', c.detail)[:120]}"
            out.setdefault(key, c)
        return out


# --------------------------------------------------------------------------- worker
Ready = dict[str, tuple[Path, Path, Callable[[], None], list[bytes]]]


def prepare(names: list[str], workdir: Path) -> Ready:
    """Set every target up once (in the supervisor: a forked worker inherits it)."""
    from tests.fuzz import targets as T

    ready: Ready = {}
    for name in names:
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        path, run = T.BY_NAME[name].setup(folder)
        fresh = [path.read_bytes()] if path.is_file() else []  # as today's writers write it
        ready[name] = (folder, path, run, T.seeds(T.BY_NAME[name]) + fresh)
    return ready


def _worker(spec: dict, ready: Ready, out: TextIO) -> None:
    """Forked child: read inputs, one line per event on ``out``."""
    from structpred.data import limits
    from tests.fuzz import targets as T

    # Images under the pixel limit cost ~15 bytes a pixel to decode, and the oracle's checks a
    # few more: at 2e7 pixels an input stays well inside --rss-mb, so the memory watch catches
    # any *other* amplification (docs/fuzzing.md). The limit logic is exercised the same way.
    limits.set_limits(max_pixels=FUZZ_MAX_PIXELS)

    current = Path(spec["workdir"]) / "current.bin"
    replay: list[tuple[str, str]] = spec["replay"] or []
    names: list[str] = spec["targets"]
    n = spec["start"]
    while spec["stop"] is None or n < spec["stop"]:
        if replay:
            name, file = replay[n]
            data = Path(file).read_bytes()
        else:
            name = names[n % len(names)]
            out.write(f"G {n} {name}\n")  # generating: the supervisor times the generator too
            out.flush()
            data = T.generate(T.BY_NAME[name], ready[name][3], random.Random(f"{spec['seed']}:{n}"))
        folder, path, run, _ = ready[name]
        current.write_bytes(data)
        path.write_bytes(data)
        out.write(f"R {n} {name}\n")
        out.flush()
        err: BaseException | None = None
        try:
            run()
        except Exception as e:  # the oracle sorts every exception
            err = e
        kind = T.outcome(err, folder)
        if kind not in CLEAN:  # kept before the next example overwrites current.bin
            current.with_name(f"crash-{n}.bin").write_bytes(data)
        detail = "" if kind in CLEAN else f"{type(err).__name__}: {err}"[:300].replace("\n", "\\n")
        out.write(f"D {n} {kind} {detail}\n")
        out.flush()
        n += 1
        if _rss_mb(os.getpid()) > spec["recycle_mb"]:  # memory an earlier input left: a fresh worker
            out.write(f"RECYCLE {n}\n")
            out.flush()
            return
    out.write("END\n")
    out.flush()


class Forked:
    """A worker forked from this process (torch and the set-up targets are already loaded)."""

    def __init__(self, spec: dict, ready: Ready) -> None:
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 0
            try:
                os.close(read_fd)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)  # native libraries' complaints; the oracle reports what matters
                faulthandler.disable()  # a segfault is reported by the supervisor, not dumped
                import logging
                import warnings

                import torch

                torch.set_num_threads(1)  # as DataLoader workers: no OpenMP pool across fork
                logging.disable(logging.CRITICAL)
                warnings.simplefilter("ignore")
                with os.fdopen(write_fd, "w") as out:
                    _worker(spec, ready, out)
            except BaseException:  # noqa: BLE001 - a harness failure: the parent sees exit 70
                code = 70
            finally:
                os._exit(code)
        os.close(write_fd)
        self.fd = read_fd
        self.returncode: int | None = None

    def wait(self) -> int:
        """Wait for the end."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        return self.returncode

    def kill(self) -> None:
        """SIGKILL (it may be hung in native code)."""
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


# ------------------------------------------------------------------------ supervisor
def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def campaign(
    reader: str,
    names: list[str],
    *,
    seed: int = 0,
    seconds: float | None = None,
    examples: int | None = None,
    replay: list[tuple[str, Path]] | None = None,
    hang: float = 30.0,
    rss_mb: float = 1500.0,
    recycle_mb: float = 1200.0,
) -> Stats:
    """Run ``names`` (targets) until ``seconds`` pass or ``examples`` examples (per target) ran;
    with ``replay`` ((target, file) pairs) read those files instead."""
    stats = Stats(reader)
    stop = len(replay) if replay is not None else (None if examples is None else examples * len(names))
    start_time = time.monotonic()
    n = 0
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{reader}-") as tmp:
        ready = prepare(names, Path(tmp))
        while stop is None or n < stop:
            if seconds is not None and time.monotonic() - start_time > seconds:
                break
            spec = {"workdir": tmp, "targets": names, "seed": seed, "start": n, "stop": stop,
                    "recycle_mb": recycle_mb,
                    "replay": [(t, str(p)) for t, p in replay] if replay is not None else None}  # fmt: skip
            n = _watch(Forked(spec, ready), stats, n, Path(tmp), start_time, seconds, hang, rss_mb)
            stats.restarts += 1
            if n < 0:
                break
    stats.seconds = time.monotonic() - start_time
    stats.restarts = max(0, stats.restarts - 1)
    return stats


def _watch(
    proc: Forked, stats: Stats, n: int, tmp: Path, t0: float, seconds: float | None,
    hang: float, rss_mb: float,
) -> int:  # fmt: skip
    """Follow one worker; returns the next example index (``-1``: finished or out of time)."""
    running: tuple[int, str, float] | None = None
    generating: tuple[int, str, float] | None = None
    base_rss = 0.0
    pending = b""
    while True:
        ready, _, _ = select.select([proc.fd], [], [], 0.25)
        now = time.monotonic()
        chunk = os.read(proc.fd, 1 << 16) if ready else None  # raw reads: no line lost in a buffer
        lines: list[bytes] = []
        if chunk:
            *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            word, *rest = raw.decode("utf-8", "replace").split(" ", 3)
            if word == "G":
                generating = (int(rest[0]), rest[1], now)
            elif word == "R":
                generating = None
                running = (int(rest[0]), rest[1], now)
                base_rss = _rss_mb(proc.pid)
            elif word == "D" and running is not None:
                kind = rest[1]
                stats.examples += 1
                stats.outcomes[kind] = stats.outcomes.get(kind, 0) + 1
                stats.results[running[0]] = kind
                if kind not in CLEAN:
                    _record(stats, running, kind, rest[2] if len(rest) > 2 else "", tmp)
                running = None
            elif word == "END":
                proc.wait()
                return -1
            elif word == "RECYCLE":
                proc.wait()
                return int(rest[0])
        if chunk == b"":  # the worker is gone without END: a native crash (or a harness failure)
            proc.wait()
            if running is None:
                return _fail_setup(proc)
            _record(stats, running, f"died-{_signal(proc.returncode)}", "", tmp)
            return running[0] + 1
        if seconds is not None and now - t0 > seconds:
            _kill(proc)
            return -1
        if generating is not None and now - generating[2] > hang:  # a harness bug: fail loudly
            _kill(proc)
            raise RuntimeError(
                f"fuzz harness: generating input {generating[0]} of {generating[1]} took > {hang} s"
            )
        if running is not None:
            too_long = now - running[2] > hang
            rss = _rss_mb(proc.pid) - base_rss  # grown during this example
            if too_long or rss > rss_mb:
                _kill(proc)
                kind = "hang" if too_long else "rss"
                _record(stats, running, kind, f"{now - running[2]:.1f} s, +{rss:.0f} MB", tmp)
                stats.examples += 1
                stats.outcomes[kind] = stats.outcomes.get(kind, 0) + 1
                return running[0] + 1


def _fail_setup(proc: Forked) -> int:
    raise RuntimeError(f"fuzz worker failed outside an example (exit {proc.returncode})")


def _signal(code: int | None) -> str:
    return f"signal{-code}" if code is not None and code < 0 else f"exit{code}"


def _kill(proc: Forked) -> None:
    proc.kill()
    proc.wait()


def _record(stats: Stats, running: tuple[int, str, float], kind: str, detail: str, tmp: Path) -> None:
    saved = tmp / f"crash-{running[0]}.bin"  # a Python-level crash the worker kept
    source = saved if saved.is_file() else tmp / "current.bin"  # a dead or killed worker's input
    data = source.read_bytes() if source.is_file() else b""
    stats.crashes.append(Crash(running[1], kind, detail, data, running[0]))
    stats.results[running[0]] = kind
    if kind.startswith("died"):
        stats.examples += 1
        stats.outcomes[kind] = stats.outcomes.get(kind, 0) + 1


def save(stats: Stats, folder: Path) -> list[Path]:
    """Keep one input per distinct crash under ``folder/<reader>/`` (replayed by the suite)."""
    from tests.fuzz.targets import BY_NAME

    saved = []
    for crash in stats.distinct().values():
        digest = hashlib.sha1(crash.data).hexdigest()[:10]
        path = folder / BY_NAME[crash.target].reader / f"{crash.target}__{crash.kind}__{digest}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(crash.data)
        saved.append(path)
    return saved


def _replayed(files: dict[str, list[Path]], reader: str) -> list[tuple[str, Path]]:
    return [(p.name.split("__")[0], p) for r, paths in files.items() if reader in ("all", r) for p in paths]


def regression_files(folder: Path) -> dict[str, list[Path]]:
    """Saved crash inputs (``<reader>/<target>__<kind>__<sha1>.bin``) by reader."""
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*/*.bin")):
        out.setdefault(path.parent.name, []).append(path)
    return out


# ------------------------------------------------------------------------------- CLI
HEADER = f"{'reader':<11} {'examples':>9} {'crashes':>8} {'distinct':>9} {'seconds':>8}  outcomes"


def _print(stats: Stats, save_crashes: bool) -> None:
    from tests.fuzz.targets import REGRESSIONS

    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items()))
    print(f"{stats.reader:<11} {stats.examples:>9} {len(stats.crashes):>8} {len(stats.distinct()):>9} "
          f"{stats.seconds:>8.0f}  {outcomes}; {stats.restarts} worker restarts", flush=True)  # fmt: skip
    for crash in stats.distinct().values():
        print(f"    {crash.target}: {crash.kind}: {crash.detail[:200]}", flush=True)
    if save_crashes:
        for path in save(stats, REGRESSIONS):
            print(f"    saved {path.relative_to(REPO)}", flush=True)


def _parallel(argv: list[str], readers: list[str], jobs: int, seed: int) -> int:
    """One supervisor process per reader, ``jobs`` at a time; their rows printed as they end."""
    pending = list(readers)
    running: list[tuple[str, subprocess.Popen]] = []
    failed = 0
    rest = [a for a in argv if a != "--readers" and a not in readers]
    rest = [a for i, a in enumerate(rest) if a != "--jobs" and (i == 0 or rest[i - 1] != "--jobs")]
    while pending or running:
        while pending and len(running) < jobs:
            reader = pending.pop(0)
            cmd = [sys.executable, "-m", "tests.fuzz.runner", *rest, "--seed", str(seed), "--readers", reader,
                   "--jobs", "1", "--quiet"]  # fmt: skip
            running.append((reader, subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)))
        time.sleep(1.0)
        for item in list(running):
            reader, proc = item
            if proc.poll() is not None:
                out, _ = proc.communicate()
                print(out, end="", flush=True)
                failed |= proc.returncode != 0
                running.remove(item)
    return int(failed)


def main(argv: list[str] | None = None) -> int:
    """``make fuzz``: print per reader the examples run, crashes found and seconds."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--readers", nargs="*", help="readers to fuzz (default: all)")
    parser.add_argument("--seconds", type=float, help="seconds per reader")
    parser.add_argument("--examples", type=int, help="examples per target (derandomised)")
    parser.add_argument("--seed", type=int, help="PRNG seed (default: random with --seconds, else 0)")
    parser.add_argument("--jobs", type=int, default=1, help="readers fuzzed at the same time (processes)")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds one example may take")
    parser.add_argument("--rss-mb", type=float, default=1500.0, help="memory one example may add (MB)")
    parser.add_argument("--together", action="store_true", help="all readers in one campaign")
    parser.add_argument("--save", action="store_true", help="keep crashes in tests/fuzz/regressions/")
    parser.add_argument("--replay", type=Path, help="replay every saved crash under this folder")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from tests.fuzz.targets import READERS

    readers = args.readers or list(READERS)
    unknown = sorted(set(readers) - set(READERS))
    if unknown:
        parser.error(f"unknown readers {unknown}; known: {list(READERS)}")
    if args.replay is None and (args.seconds is None) == (args.examples is None):
        parser.error("give exactly one of --seconds and --examples (or --replay)")
    seed = args.seed if args.seed is not None else (int.from_bytes(os.urandom(4)) if args.seconds else 0)
    if not args.quiet:
        print(f"seed {seed}; {'replay' if args.replay else 'fuzz'} of {', '.join(readers)}", flush=True)
        print(HEADER, flush=True)
    if args.jobs > 1 and len(readers) > 1 and not args.together:
        return _parallel(argv, readers, args.jobs, seed)
    files = regression_files(args.replay) if args.replay else {}
    groups = {r: [t.name for t in READERS[r]] for r in readers}
    if args.together:
        groups = {"all": [name for names in groups.values() for name in names]}
    if args.replay:  # only the readers with saved inputs
        groups = {r: names for r, names in groups.items() if _replayed(files, r)}
    total = 0
    for reader, names in groups.items():
        stats = campaign(reader, names, seed=seed, seconds=args.seconds, examples=args.examples,
                         replay=_replayed(files, reader) if args.replay else None, hang=args.hang,
                         rss_mb=args.rss_mb)  # fmt: skip
        total += len(stats.crashes)
        _print(stats, args.save and not args.replay)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
