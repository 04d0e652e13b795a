"""The MOTChallenge reader: files and arrays as motmetrics' loader reads them; every bad field
named by file, line and column; limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

if not hasattr(np, "asfarray"):  # motmetrics 1.4 still calls np.asfarray, gone in NumPy 2
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]

import motmetrics as mm  # type: ignore[import-untyped]  # noqa: E402

from structpred.data import limits  # noqa: E402
from structpred.data.formats import mot  # noqa: E402
from structpred.data.formats.mot import MotRows, read_mot  # noqa: E402

MM_DATA = Path(mm.__file__).parent / "data"


def _write(tmp_path: Path, text: str, name: str = "gt.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "rel", ["TUD-Campus/gt.txt", "TUD-Campus/test.txt", "TUD-Stadtmitte/gt.txt", "iotest/motchallenge.txt"]
)
@pytest.mark.parametrize("min_confidence", [None, 1.0])
def test_equals_motmetrics_loader(rel: str, min_confidence: float | None) -> None:
    path = MM_DATA / rel
    rows = read_mot(path, min_confidence=min_confidence)
    ref = mm.io.loadtxt(
        str(path), fmt="mot16", min_confidence=-1 if min_confidence is None else min_confidence
    )
    assert len(rows) == len(ref) and rows.source == str(path)
    np.testing.assert_array_equal(rows.frames, ref.index.get_level_values("FrameId"))
    np.testing.assert_array_equal(rows.ids, ref.index.get_level_values("Id"))
    xywh = ref[["X", "Y", "Width", "Height"]].to_numpy() + [1, 1, 0, 0]  # motmetrics shifts to 0-based
    np.testing.assert_allclose(rows.boxes, xywh, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(rows.conf, ref["Confidence"].to_numpy())
    assert rows.frames.dtype == rows.ids.dtype == np.int64 and rows.extra.shape == (len(rows), 3)


def test_separators_columns_and_blank_lines(tmp_path: Path) -> None:
    text = "1 1 10 20 30 40\n\n  2,\t1 , 11, 21,30,40,\n3\t2\t5.5\t6\t7\t8\n"
    rows = read_mot(_write(tmp_path, text))
    np.testing.assert_array_equal(rows.frames, [1, 2, 3])
    np.testing.assert_array_equal(rows.boxes[1], [11, 21, 30, 40])
    np.testing.assert_array_equal(rows.conf, [1, 1, 1])  # absent conf -> 1
    assert rows.extra.shape == (3, 0)
    mot16 = read_mot(_write(tmp_path, "1,1,1,1,5,5,0,1,0.5\n1,2,1,1,5,5,1,7,1.0\n"))
    np.testing.assert_array_equal(mot16.extra, [[1, 0.5], [7, 1.0]])
    assert (
        len(read_mot(_write(tmp_path, "1,1,1,1,5,5,0,1,0.5\n1,2,1,1,5,5,1,7,1.0\n"), min_confidence=1)) == 1
    )


def test_arrays_and_rows_pass_through() -> None:
    array = np.array([[1, 3, 0, 0, 4, 4], [1, 4, 1, 1, 4, 4, 0.5][:6]], dtype=float)
    rows = read_mot(array)
    assert rows.source == "rows" and read_mot(rows) is rows
    assert len(read_mot(array.tolist())) == 2
    assert len(read_mot(np.zeros((0, 6)))) == len(read_mot([])) == 0
    assert (
        isinstance(read_mot(rows, min_confidence=2.0), MotRows)
        and len(read_mot(rows, min_confidence=2.0)) == 0
    )


def test_empty_file(tmp_path: Path) -> None:
    assert len(read_mot(_write(tmp_path, "\n\n"))) == 0


def test_chunks_join_and_name_the_right_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mot, "_CHUNK", 3)
    lines = [f"{f},1,0,0,5,5" for f in range(1, 11)]
    assert len(read_mot(_write(tmp_path, "\n".join(lines)))) == 10
    lines[7] = "8,1,0,zero,5,5"
    with pytest.raises(ValueError, match=r"gt.txt line 8 column y: not a number: 'zero'"):
        read_mot(_write(tmp_path, "\n".join(lines)))
    lines[7] = "8,1,0,0,5,5,1"
    with pytest.raises(ValueError, match=r"gt.txt line 8: 7 columns, the lines before have 6"):
        read_mot(_write(tmp_path, "\n".join(lines)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,1,10,20,30\n", r"gt.txt line 1: 5 columns, missing h"),
        ("1,1\n", r"gt.txt line 1: 2 columns, missing x, y, w, h"),
        ("1,1,1,1,1,1,1,1,1,1,1\n", r"gt.txt line 1: 11 columns, at most 10"),
        ("1,1,10,20,30,40\n1,2,10,,30,40\n", r"gt.txt line 2 column y: not a number: ''"),
        ("1,1,10,20,30,abc\n", r"gt.txt line 1 column h: not a number: 'abc'"),
        ("1,1,10,20,30,nan\n", r"gt.txt line 1 column h: must be finite, got nan"),
        ("1,1,inf,20,30,40\n", r"gt.txt line 1 column x: must be finite, got inf"),
        ("1,1,10,20,-30,40\n", r"gt.txt line 1 column w: size must be >= 0, got -30.0"),
        ("1,1,10,-2e12,30,40\n", r"gt.txt line 1 column y: beyond 1e\+12 px, got -2000000000000.0"),
        ("1,1,10,20,30,1e300\n", r"gt.txt line 1 column h: beyond 1e\+12 px"),
        ("\n1.5,1,10,20,30,40\n", r"gt.txt line 2 column frame: must be an integer, got 1.5"),
        ("1,2.25,10,20,30,40\n", r"gt.txt line 1 column id: must be an integer, got 2.25"),
        ("1,1e300,10,20,30,40\n", r"gt.txt line 1 column id: must be an integer"),
        (
            "1,7,1,1,5,5\n2,7,1,1,5,5\n\n1,7,2,2,5,5\n",
            r"gt.txt line 4 column id: \(frame 1, id 7\) repeats line 1",
        ),
        ("1,1,10,20,30,40\n2,1,1,1,5,5,1\n", r"gt.txt line 2: 7 columns, the lines before have 6"),
    ],
)
def test_bad_files_name_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        read_mot(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_bad_encoding_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"1,1,\xff\xfe,2,3,4\n")
    with pytest.raises(ValueError, match=r"bin.txt: MOT file is not UTF-8"):
        read_mot(path)
    with pytest.raises(ValueError, match=r"nope.txt: MOT file not found"):
        read_mot(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match=r"not found \(a directory\)"):
        read_mot(tmp_path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.zeros((3, 5)), r"rows: expected an array \[N, 6..10\]"),
        (np.zeros(6), r"rows: expected an array \[N, 6..10\]"),
        ([["a", 1, 1, 1, 1, 1]], r"rows: expected a numeric array"),
        (
            np.array([[1, 1, 0, 0, 5, 5], [1, 1, 3, 3, 5, 5]]),
            r"rows row 1 column id: \(frame 1, id 1\) repeats row 0",
        ),
        (np.array([[1, 1, 0, 0, 5, -5]]), r"rows row 0 column h: size must be >= 0"),
        (np.array([[1, 1, 0, np.nan, 5, 5]]), r"rows row 0 column y: must be finite"),
    ],
)
def test_bad_arrays(rows: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_mot(rows)  # type: ignore[arg-type]


def test_bad_min_confidence() -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        read_mot(np.zeros((0, 6)), min_confidence=float("nan"))


def test_limits(tmp_path: Path) -> None:
    path = _write(tmp_path, "1,1,0,0,5,5\n1,2,0,0,5,5\n1,3,0,0,5,5\n2,1,0,0,5,5\n")
    with limits.override(max_annotations_per_image=3):
        assert len(read_mot(path)) == 4  # at the limit
    with (
        limits.override(max_annotations_per_image=2),
        pytest.raises(limits.LimitError, match=r"rows of frame 1"),
    ):
        read_mot(path)
    with limits.override(max_text_file_bytes=20), pytest.raises(limits.LimitError, match=r"gt.txt: size of"):
        read_mot(path)
    with (
        limits.override(max_annotations_per_image=2),
        pytest.raises(limits.LimitError, match=r"rows: rows of frame 1"),
    ):
        read_mot(np.array([[1, i, 0, 0, 5, 5] for i in range(3)]))


def test_fuzz_target_seeds_and_a_bounded_run(tmp_path: Path) -> None:
    """The ``mot_txt`` fuzz target (tests/fuzz/targets_mot.py): its seeds and 40 derandomised
    mutations (up to 20 KB) read to a contract-keeping result or a one-line error naming the file."""
    import random

    from tests.fuzz import targets
    from tests.fuzz.targets_mot import CORPUS_FILES, MOT_TARGETS

    (target,) = MOT_TARGETS
    made = CORPUS_FILES["mot_txt"]()
    seeds = [made[name] for name in sorted(made)]
    assert seeds == [p.read_bytes() for p in sorted((targets.CORPUS / "mot_txt").iterdir())]  # committed
    path, run = target.setup(tmp_path)
    rnd = random.Random(0)
    kinds = []
    for n in range(len(seeds) + 40):
        data = seeds[n] if n < len(seeds) else targets.generate(target, seeds, rnd)
        if len(data) > 20_000:
            continue  # the long inputs are the fuzzer's (make fuzz), not the suite's
        path.write_bytes(data)
        try:
            run()
            err = None
        except Exception as caught:  # noqa: BLE001  (the oracle classifies every exception)
            err = caught
        kinds.append(targets.outcome(err, tmp_path))
    assert set(kinds) <= {"ok", "error"}, kinds
    assert kinds[: len(seeds)] == ["ok"] * len(seeds) and "error" in kinds
