"""structpred.progress: a bar on a terminal, a few summary lines in a log file."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from structpred.progress import Progress, progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_tty_writes_start_quarters_and_end_only() -> None:
    out = io.StringIO()
    items = list(progress(range(1000), desc="epoch 1/2", file=out))
    assert items == list(range(1000))  # iteration unchanged
    lines = out.getvalue().splitlines()
    assert len(lines) == 5, lines  # start, 25 %, 50 %, 75 %, done
    assert lines[0] == "epoch 1/2: start, 1000 items"
    assert "250/1000 (25%)" in lines[1] and "500/1000 (50%)" in lines[2] and "750/1000 (75%)" in lines[3]
    assert lines[4].startswith("epoch 1/2: done 1000/1000,") and "it/s" in lines[4]
    assert "\r" not in out.getvalue()


def test_non_tty_postfix_and_resumed_start() -> None:
    out = io.StringIO()
    bar = Progress(total=8, initial=5, desc="epoch 2/3", file=out)
    bar.update(1)
    bar.set_postfix(loss="0.412")
    bar.update(2)
    bar.close()
    bar.close()  # idempotent
    lines = out.getvalue().splitlines()
    # 25 % and 50 % were passed before the resume: not reported; 75 % (6/8) is.
    assert lines[0] == "epoch 2/3: start, 8 items (from 5)"
    assert lines[1].startswith("epoch 2/3: 6/8 (75%)")
    assert lines[-1].startswith("epoch 2/3: done 8/8,") and lines[-1].endswith("loss 0.412")
    assert len(lines) == 3


def test_a_quick_loop_writes_start_and_end_only() -> None:
    out = io.StringIO()
    assert len(list(progress(range(1000), desc="validation", file=out, min_interval=2.0))) == 1000
    lines = out.getvalue().splitlines()
    assert lines[0] == "validation: start, 1000 items" and lines[1].startswith("validation: done 1000/1000,")
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("min_interval", "written"),
    [
        (1.5, ["start", "2/8 (25%)", "4/8 (50%)", "6/8 (75%)", "done 8/8"]),
        (2.5, ["start", "4/8 (50%)", "done 8/8"]),
    ],
)
def test_quarters_are_written_when_enough_time_passed(
    monkeypatch: pytest.MonkeyPatch, min_interval: float, written: list[str]
) -> None:
    now = [0.0]
    monkeypatch.setattr("structpred.progress.time.perf_counter", lambda: now[0])
    out = io.StringIO()
    bar = Progress(total=8, desc="epoch 1/1", file=out, min_interval=min_interval)
    for _ in range(8):  # one item a second
        now[0] += 1.0
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0].removeprefix("epoch 1/1: ") for line in lines] == written
    assert lines[-1] == "epoch 1/1: done 8/8, 1.00 it/s, 8 s"


def test_unknown_total_and_disabled() -> None:
    out = io.StringIO()
    assert list(progress(iter(range(50)), file=out)) == list(range(50))
    lines = out.getvalue().splitlines()
    assert lines[0] == "start, items" and lines[1].startswith("done 50,") and len(lines) == 2
    quiet = io.StringIO()
    assert list(progress(range(10), enabled=False, file=quiet)) == list(range(10))
    assert quiet.getvalue() == ""


def test_tty_draws_a_bar_in_place() -> None:
    out = _Tty()
    bar = progress(range(20), desc="work", file=out)
    assert bar.tty
    assert list(bar) == list(range(20))
    assert "\r" in out.getvalue()  # tqdm redraws the line in place


def test_iterating_without_an_iterable_is_an_error() -> None:
    with pytest.raises(TypeError, match="update"):
        list(Progress(total=3, enabled=False))


def test_subprocess_with_stderr_to_a_file_writes_few_lines(tmp_path: Path) -> None:
    """`make demo > log 2>&1`: stderr is a file, so a long loop writes a handful of lines."""
    code = (
        "from structpred.progress import progress\n"
        "for epoch in range(2):\n"
        "    for _ in progress(range(5000), desc=f'epoch {epoch + 1}/2'):\n"
        "        pass\n"
    )
    log = tmp_path / "log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=f, check=True, timeout=60)
    text = log.read_text()
    assert len(text.splitlines()) == 10, text  # 5 per loop
    assert "\r" not in text
