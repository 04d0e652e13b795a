"""Middlebury .flo: layout against a hand-packed file, round trips, broken files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from structpred.data.formats import read_flo, write_flo


def pack_flo(width: int, height: int, values: list[float], magic: float = 202021.25) -> bytes:
    """A .flo file written from the spec: '<f' magic, '<i' width, '<i' height, '<f' data."""
    return struct.pack("<fii", magic, width, height) + struct.pack(f"<{len(values)}f", *values)


def test_layout_matches_spec(tmp_path):
    # u = column index, v = 10 * row: interleaved (u, v) per pixel, rows first
    height, width = 3, 4
    values = []
    for y in range(height):
        for x in range(width):
            values += [float(x), 10.0 * y]
    path = tmp_path / "a.flo"
    path.write_bytes(pack_flo(width, height, values))
    flow = read_flo(path)
    assert flow.shape == (2, height, width) and flow.dtype == torch.float32
    for y in range(height):
        for x in range(width):
            assert flow[0, y, x] == x and flow[1, y, x] == 10 * y


def test_magic_bytes_are_PIEH(tmp_path):
    path = tmp_path / "a.flo"
    write_flo(path, torch.zeros(2, 1, 1))
    assert path.read_bytes()[:4] == b"PIEH"
    assert len(path.read_bytes()) == 12 + 8


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 1, 1), (2, 13, 3)])
def test_round_trip(tmp_path, shape):
    gen = torch.Generator().manual_seed(0)
    flow = torch.randn(shape, generator=gen) * 20
    flow[0, 0, 0] = 1e10  # Middlebury's "unknown" marker is kept as stored
    path = tmp_path / "f.flo"
    write_flo(path, flow)
    assert torch.equal(read_flo(path), flow)


def test_round_trip_float64_input(tmp_path):
    flow = torch.linspace(-3, 3, 2 * 4 * 6, dtype=torch.float64).reshape(2, 4, 6)
    write_flo(tmp_path / "f.flo", flow)
    assert torch.equal(read_flo(tmp_path / "f.flo"), flow.float())


def test_matches_numpy_reference_reader(tmp_path):
    rng = np.random.default_rng(1)
    hw2 = rng.normal(size=(6, 9, 2)).astype(np.float32)
    path = tmp_path / "f.flo"
    path.write_bytes(pack_flo(9, 6, hw2.reshape(-1).tolist()))
    assert np.array_equal(read_flo(path).permute(1, 2, 0).numpy(), hw2)


@pytest.mark.parametrize(
    "data, match",
    [
        (pack_flo(2, 2, [0.0] * 8, magic=1.0), "magic"),
        (b"PIEH\x02\x00", "truncated"),
        (b"", "truncated"),
        (pack_flo(2, 2, [0.0] * 7), "truncated"),
        (pack_flo(2, 2, [0.0] * 9), "trailing"),
        (pack_flo(-1, 2, []), "absurd"),
        (pack_flo(0, 2, []), "absurd"),
        (pack_flo(2**30, 2**30, [0.0] * 2), "absurd"),
    ],
)
def test_bad_files(tmp_path, data, match):
    path = tmp_path / "bad.flo"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match) as info:
        read_flo(path)
    assert "bad.flo" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="nope.flo.*not found"):
        read_flo(tmp_path / "nope.flo")


@pytest.mark.parametrize(
    "flow, match",
    [
        (torch.zeros(3, 2, 2), r"\[2, H, W\]"),
        (torch.zeros(2, 2), r"\[2, H, W\]"),
        (torch.zeros(2, 2, 2, dtype=torch.int32), "floating"),
        (torch.zeros(2, 0, 3), "cannot be written"),
    ],
)
def test_write_rejects_bad_flow(tmp_path, flow, match):
    with pytest.raises(ValueError, match=match):
        write_flo(tmp_path / "x.flo", flow)
