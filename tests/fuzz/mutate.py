"""Input generators of the fuzz targets: byte-level mutation of a seed plus format-aware edits.

Every generator is a pure function of ``(seed bytes, random.Random)``, so a run is reproduced by
its PRNG seed and a crash by the saved bytes. Byte mutations (bit flips, interesting integers,
inserted / deleted / duplicated / spliced ranges, truncation, numbers in text swapped for hostile
ones) find what a corrupt download does; the format-aware edits reach what a byte flip rarely
does: a PNG / JPEG header declaring a huge size with a valid CRC, a JSON value of the wrong type or
an absurd magnitude, YAML alias bombs and deep nesting, XML entities, a safetensors header lying
about its length.
"""

from __future__ import annotations

import copy
import json
import random
import re
import struct
import zlib
from collections.abc import Callable
from typing import Any

Mutator = Callable[[bytes, random.Random], bytes]

INTERESTING_INTS = [0, 1, -1, 2, 7, 8, 16, 127, 128, 255, 256, 32767, 32768, 65535, 65536,
                    2**31 - 1, 2**31, 2**32 - 1, 2**32, -(2**31), 2**63 - 1, 10**9]  # fmt: skip
HOSTILE_NUMBERS = ["-1", "0", "-0", "1e309", "-1e309", "NaN", "nan", "inf", "-inf", "Infinity",
                   "1e-320", "99999999999999999999999", "4294967296", "2147483648", "0x10", "1_0",
                   "1e9", "-1e9", "3.5", "", "+", "٣", "1e400000"]  # fmt: skip
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
MAX_OUTPUT = 4_000_000  # bytes: big enough for count limits, small enough for a fast example


# ------------------------------------------------------------------------------- bytes
def _flip(data: bytearray, rnd: random.Random) -> None:
    if data:
        i = rnd.randrange(len(data))
        data[i] ^= 1 << rnd.randrange(8)


def _byte(data: bytearray, rnd: random.Random) -> None:
    if data:
        data[rnd.randrange(len(data))] = rnd.choice([0, 1, 0x7F, 0x80, 0xFF, rnd.randrange(256)])


def _int(data: bytearray, rnd: random.Random) -> None:
    if len(data) >= 4:
        i = rnd.randrange(len(data) - 3)
        value = rnd.choice(INTERESTING_INTS) & 0xFFFFFFFF
        data[i : i + 4] = struct.pack(rnd.choice(["<I", ">I"]), value)


def _insert(data: bytearray, rnd: random.Random) -> None:
    i = rnd.randrange(len(data) + 1)
    n = rnd.choice([1, 2, 4, 16, 100])
    data[i:i] = bytes(rnd.randrange(256) for _ in range(n))


def _delete(data: bytearray, rnd: random.Random) -> None:
    if data:
        i = rnd.randrange(len(data))
        del data[i : i + rnd.choice([1, 4, 16, 256])]


def _duplicate(data: bytearray, rnd: random.Random) -> None:
    if data:
        i = rnd.randrange(len(data))
        chunk = data[i : i + rnd.choice([4, 32, 512])]
        j = rnd.randrange(len(data) + 1)
        data[j:j] = chunk * rnd.choice([1, 2, 16])


def _truncate(data: bytearray, rnd: random.Random) -> None:
    if data:
        del data[rnd.randrange(len(data)) :]


def _number(data: bytearray, rnd: random.Random) -> None:
    spans = [m.span() for m in _NUMBER.finditer(data)]
    if spans:
        a, b = rnd.choice(spans)
        data[a:b] = rnd.choice(HOSTILE_NUMBERS).encode()


_BYTE_OPS = [_flip, _byte, _int, _insert, _delete, _duplicate, _truncate, _number]


def mutate_bytes(seed: bytes, rnd: random.Random, others: list[bytes] | None = None) -> bytes:
    """1..8 random byte-level edits of ``seed`` (sometimes spliced with another seed)."""
    data = bytearray(seed)
    if others and rnd.random() < 0.1:
        other = rnd.choice(others)
        data = data[: rnd.randrange(len(data) + 1)] + other[rnd.randrange(len(other) + 1) :]
    for _ in range(rnd.choice([1, 1, 2, 3, 8])):
        rnd.choice(_BYTE_OPS)(data, rnd)
    return bytes(data[:MAX_OUTPUT])


# -------------------------------------------------------------------------------- JSON
def hostile_value(rnd: random.Random) -> Any:
    """A JSON value a careless reader mishandles."""
    pick = rnd.randrange(16)
    if pick == 0:
        return rnd.choice([None, True, False, "", "x", "../../etc/passwd", "a\nb", "\x00"])
    if pick == 1:
        return rnd.choice([-1, 0, 2**31, 2**63, -(2**63), 10**30, 10**400])
    if pick == 2:
        return rnd.choice([float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 1e-320, 0.5])
    if pick == 3:
        return rnd.choice([[], {}, [[]], [None], [0, 0, 0, 0], [-5, -5, 1e9, 1e9]])
    if pick == 4:  # a long flat list (a polygon with many vertices)
        n = rnd.choice([5, 6, 7, 1001, 100_001, 200_002])
        return [rnd.choice([0, 1, 3.5, 1e9, -1]) for _ in range(n)]
    if pick == 5:  # many short lists (many rings); separate lists: a later edit changes one
        return [[0, 0, 1, 0, 1, 1] for _ in range(rnd.choice([2, 10_001, 20_000]))]
    if pick == 6:  # deep nesting
        depth = rnd.choice([60, 1000, 100_000])
        return json.loads("[" * depth + "]" * depth) if depth < 900 else _Raw("[" * depth + "]" * depth)
    if pick == 7:
        return {"size": [rnd.choice([0, 1, 48, 10**9]), rnd.choice([0, 64, 10**9])],
                "counts": rnd.choice(["", "0", "PPP", "\u00ff" * 10, [10**18], [0, 3072], [-1]])}  # fmt: skip
    if pick == 8:
        return "x" * rnd.choice([1000, 100_000])
    return rnd.choice([rnd.randint(-3, 70), rnd.uniform(-5, 100), rnd.choice(INTERESTING_INTS)])


class _Raw(str):
    """Text spliced into the JSON output verbatim (nesting deeper than ``json.dumps`` recurses)."""


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):
            out += _nodes(v, (*path, i))
    return out


def _dumps(value: Any) -> bytes:
    raws: list[str] = []

    def swap(v: Any) -> Any:
        if isinstance(v, _Raw):
            raws.append(str(v))
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value))  # NaN / Infinity written as Python's json writes them
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw)
    return text.encode()


def mutate_json(seed: bytes, rnd: random.Random) -> bytes:
    """1..3 edits of the parsed document: a value replaced, a key dropped or duplicated."""
    try:
        doc = json.loads(seed)
    except ValueError:
        return mutate_bytes(seed, rnd)
    for _ in range(rnd.choice([1, 1, 2, 3])):
        path = rnd.choice(_nodes(doc))
        if not path:
            doc = hostile_value(rnd) if rnd.random() < 0.2 else doc
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = rnd.randrange(4)
        if action == 0 and isinstance(parent, dict):
            del parent[key]
        elif action == 1 and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))  # a duplicate entry (same id), not an alias
        else:
            parent[key] = hostile_value(rnd)
    out = _dumps(doc)
    return out if len(out) <= MAX_OUTPUT else mutate_bytes(seed, rnd)


# -------------------------------------------------------------------------------- YAML
YAML_BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n".encode() for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def mutate_yaml(seed: bytes, rnd: random.Random) -> bytes:
    """Alias bombs, deep nesting, tags, huge scalars, or a byte mutation of the seed."""
    pick = rnd.randrange(8)
    if pick == 0:
        return seed + b"\n" + YAML_BOMB + b"names: *i\n"
    if pick == 1:
        depth = rnd.choice([60, 1000, 30_000])
        return seed + b"\nnames: " + b"[" * depth + b"]" * depth + b"\n"
    if pick == 2:
        return seed + rnd.choice([b"\nx: !!python/object/apply:os.system [ls]\n", b"\nnames: !!binary AAAA\n",
                                  b"\nnc: 1e400\n", b"\nnames: {0: a, 0: b}\n", b"\n--- \n---\n",
                                  b"\nnc: 99999999999999999999\n", b"\ntrain: /dev/zero\n",
                                  b"\ntrain: ../../../../\n", b"\ntrain: [[[[x]]]]\n"])  # fmt: skip
    if pick == 3:
        return (
            seed + b"\nnames: [" + b", ".join(b"c%d" % i for i in range(rnd.choice([300, 70_000]))) + b"]\n"
        )
    return mutate_bytes(seed, rnd)


# --------------------------------------------------------------------------------- XML
def mutate_xml(seed: bytes, rnd: random.Random) -> bytes:
    """Entities (billion laughs, external), deep nesting, element text swapped for hostile text."""
    pick = rnd.randrange(8)
    if pick == 0:
        ents = '<!ENTITY a "aaaaaaaaaa">' + "".join(
            f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        return f"<?xml version='1.0'?><!DOCTYPE annotation [{ents}]>".encode() + seed.replace(
            b"<pose>", b"<pose>&i;", 1
        )
    if pick == 1:
        return b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + seed.replace(
            b"<pose>", b"<pose>&e;", 1
        )
    if pick == 2:
        depth = rnd.choice([100, 5000, 100_000])
        return seed.replace(b"</annotation>", b"<d>" * depth + b"</d>" * depth + b"</annotation>")
    if pick in (3, 4):
        texts = list(re.finditer(rb">([^<>]*)</", seed))
        if texts:
            text = rnd.choice(texts)
            value = rnd.choice([*HOSTILE_NUMBERS, "-5", "1e9", "", "dog cat", "x" * 300, "&amp;", "\u00e9"])
            return seed[: text.start(1)] + value.encode() + seed[text.end(1) :]
    if pick == 5:  # an object repeated many times
        found = re.search(rb"<object>.*?</object>", seed, re.S)
        if found:
            copies = found.group(0) * rnd.choice([2, 1000, 20_000])
            return seed[: found.start()] + copies + seed[found.end() :]
    return mutate_bytes(seed, rnd)


# ---------------------------------------------------------------------------- images
def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks, i = [], 8
    while i + 8 <= len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        chunks.append((kind, body))
        i += 12 + n
    return chunks


def _png_join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(out)


def mutate_png(seed: bytes, rnd: random.Random) -> bytes:
    """IHDR fields (size, bit depth, colour type) rewritten with a valid CRC, chunks dropped,
    duplicated or added (a zlib bomb in IDAT, a huge text chunk), else a byte mutation."""
    chunks = _png_chunks(seed)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13 or rnd.random() < 0.3:
        return mutate_bytes(seed, rnd)
    w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    pick = rnd.randrange(6)
    if pick == 0:
        sizes = [(0, 1), (1, 0), (100_000, 100_000), (2**31 - 1, 1), (1, 2**31 - 1), (10_001, 10_001)]
        w, h = rnd.choice([*sizes, (w * 2, h), (w, h + 1), (1, 1), (2**32 - 1, 2**32 - 1)])
    elif pick == 1:
        depth = rnd.choice([1, 2, 4, 8, 16, 3, 0, 255])
        ctype = rnd.choice([0, 2, 3, 4, 6, 1, 7])
    elif pick == 2:
        inter, filt, comp = rnd.choice([(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0)])
    elif pick == 3:
        idat = [i for i, (k, _) in enumerate(chunks) if k == b"IDAT"]
        if idat:  # a small IDAT that inflates to many MB
            chunks[idat[0]] = (b"IDAT", zlib.compress(b"\x00" * rnd.choice([10**6, 50 * 10**6]), 9))
    elif pick == 4:
        extra = rnd.choice([(b"tEXt", b"k\x00" + b"v" * 100_000), (b"PLTE", b"\x00" * 3),
                            (b"tRNS", b"\xff" * 300), (b"iCCP", b"p\x00\x00" + b"\x78\x9c" + b"\x00" * 50),
                            (b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 10**7))])  # fmt: skip
        chunks.insert(rnd.randrange(1, len(chunks)), extra)
    else:
        i = rnd.randrange(1, len(chunks))
        if rnd.random() < 0.5:
            del chunks[i]
        else:
            chunks.insert(i, chunks[i])
    chunks[0] = (
        b"IHDR",
        struct.pack(">IIBBBBB", w & 0xFFFFFFFF, h & 0xFFFFFFFF, depth, ctype, comp, filt, inter),
    )
    return _png_join(chunks)


def mutate_jpeg(seed: bytes, rnd: random.Random) -> bytes:
    """A SOF marker's size rewritten (huge, zero), else a byte mutation."""
    i = max(seed.find(b"\xff\xc0"), seed.find(b"\xff\xc2"))
    if i < 0 or rnd.random() < 0.5 or len(seed) < i + 9:
        return mutate_bytes(seed, rnd)
    h, w = rnd.choice([(65535, 65535), (0, 64), (48, 0), (30000, 30000), (1, 1)])
    return seed[: i + 5] + struct.pack(">HH", h, w) + seed[i + 9 :]


def mutate_image(seed: bytes, rnd: random.Random) -> bytes:
    """By the seed's format."""
    if seed.startswith(b"\x89PNG"):
        return mutate_png(seed, rnd)
    if seed.startswith(b"\xff\xd8"):
        return mutate_jpeg(seed, rnd)
    return mutate_bytes(seed, rnd)


# ---------------------------------------------------------------------------- binary headers
def mutate_flo(seed: bytes, rnd: random.Random) -> bytes:
    """Width / height fields set to interesting ints, else a byte mutation."""
    if len(seed) < 12 or rnd.random() < 0.4:
        return mutate_bytes(seed, rnd)
    w, h = rnd.choice(INTERESTING_INTS), rnd.choice(INTERESTING_INTS)
    body = seed[12:] if rnd.random() < 0.7 else seed[12:] * rnd.choice([2, 100])
    return seed[:4] + struct.pack("<ii", *(((v + 2**31) % 2**32) - 2**31 for v in (w, h))) + body


def mutate_safetensors(seed: bytes, rnd: random.Random) -> bytes:
    """The 8-byte header length, or the JSON header (dtypes, shapes, offsets), else bytes."""
    if len(seed) < 8 or rnd.random() < 0.3:
        return mutate_bytes(seed, rnd)
    (n,) = struct.unpack("<Q", seed[:8])
    header, body = seed[8 : 8 + n], seed[8 + n :]
    if rnd.random() < 0.3:
        return struct.pack("<Q", rnd.choice([0, 1, n - 1, n + 1, 2**32, 2**63, 2**64 - 1])) + seed[8:]
    try:
        doc = json.loads(header)
    except ValueError:
        return mutate_bytes(seed, rnd)
    name = rnd.choice(sorted(k for k in doc if k != "__metadata__") or ["x"])
    entry = doc.setdefault(name, {})
    if isinstance(entry, dict):
        field = rnd.choice(["dtype", "shape", "data_offsets"])
        entry[field] = rnd.choice([
            "F64", "BOOL", "X", [2**40, 2**40], [-1], [], [0, 2**62], [10, 5], [0, 1, 2], hostile_value(rnd),
        ])  # fmt: skip
    new = json.dumps(doc).encode()
    return struct.pack("<Q", len(new)) + new + body


def mutate_lines(seed: bytes, rnd: random.Random) -> bytes:
    """YOLO label text: a field swapped for a hostile token, fields added or dropped, many lines."""
    lines = seed.decode("utf-8", "replace").splitlines() or ["0 0.5 0.5 0.1 0.1"]
    pick = rnd.randrange(5)
    i = rnd.randrange(len(lines))
    fields = lines[i].split() or ["0"]
    if pick == 0:
        fields[rnd.randrange(len(fields))] = rnd.choice(HOSTILE_NUMBERS + ["-2", "1.0000001", "2", "cat"])
        lines[i] = " ".join(fields)
    elif pick == 1:
        lines[i] = " ".join(fields + ["0.5"] * rnd.choice([1, 2, 3, 200_000]))
    elif pick == 2:
        lines *= rnd.choice([2, 1000, 120_000])
    elif pick == 3:
        lines[i] = " ".join(fields[: rnd.randrange(len(fields))])
    else:
        return mutate_bytes(seed, rnd)
    return "\n".join(lines).encode()[:MAX_OUTPUT]
