"""Fuzz targets of the stereo readers (:mod:`structpred.data.stereo_real`): Middlebury ``calib.txt``,
grey PFM disparities, and a ``stereo-folder`` layout whose 16-bit disparity PNG is replaced.

The same oracle as :mod:`tests.fuzz.targets` (a contract-keeping result, or a one-line
``ValueError`` naming a file of the layout). :data:`STEREO_TARGETS` joins ``targets.TARGETS`` and
:data:`CORPUS_FILES` ``make_corpus.EXTRA``; ``python -m tests.fuzz.targets_stereo`` writes the seeds.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.fuzz import mutate
from tests.fuzz.targets import CORPUS, Setup, Target, WrongResult, check_image

MOTORCYCLE_CALIB = (
    "cam0=[3979.911 0 1244.772; 0 3979.911 1019.507; 0 0 1]\n"
    "cam1=[3979.911 0 1369.115; 0 3979.911 1019.507; 0 0 1]\n"
    "doffs=124.343\nbaseline=193.001\nwidth=2964\nheight=1988\nndisp=270\nisint=0\n"
    "vmin=23\nvmax=245\ndyavg=0\ndymax=0\n"
)


def pfm_bytes(values: np.ndarray, little: bool = True) -> bytes:
    """A grey PFM of ``values`` [H, W] (rows written bottom to top, as the format says)."""
    h, w = values.shape
    header = f"Pf\n{w} {h}\n{-1.0 if little else 1.0}\n".encode()
    return header + np.ascontiguousarray(values[::-1], dtype="<f4" if little else ">f4").tobytes()


def png16_bytes(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def mutate_pfm(seed: bytes, rnd: random.Random) -> bytes:
    """Header fields (kind, width, height, scale) swapped for hostile values, else byte mutations."""
    parts = seed.split(b"\n", 3)
    if len(parts) < 4 or rnd.random() < 0.3:
        return mutate.mutate_bytes(seed, rnd)
    kind, size, scale, body = parts
    pick = rnd.randrange(4)
    if pick == 0:
        kind = rnd.choice([b"PF", b"pf", b"P6", b"", b"Pf Pf"])
    elif pick == 1:
        w, h = (rnd.choice(mutate.INTERESTING_INTS) for _ in range(2))
        size = f"{w} {h}".encode()
    elif pick == 2:
        scale = rnd.choice(mutate.HOSTILE_NUMBERS).encode()
    else:
        body = body * rnd.choice([0, 2, 1000]) if rnd.random() < 0.5 else body[: rnd.randrange(len(body) + 1)]
    return b"\n".join([kind, size, scale, body])


def _read_calib(path: Path) -> None:
    from structpred.data.stereo_real import read_calib_txt

    c = read_calib_txt(path)
    if not (math.isfinite(c.focal) and c.focal > 0 and math.isfinite(c.baseline) and c.baseline > 0):
        raise WrongResult(f"{path}: focal {c.focal} / baseline {c.baseline} not finite and > 0")
    if not math.isfinite(c.doffs) or (c.width is not None and c.width < 1):
        raise WrongResult(f"{path}: doffs {c.doffs} / width {c.width}")


def _read_pfm(path: Path) -> None:
    from structpred.data.stereo_real import read_pfm

    values = read_pfm(path)
    if values.dtype != torch.float32 or values.dim() != 2 or values.numel() == 0:
        raise WrongResult(f"{path}: PFM read as {values.dtype} {tuple(values.shape)}")


def _stereo_folder(workdir: Path) -> tuple[Path, Callable[[], None]]:
    """``left/p0.png``, ``right/p0.png`` (12 x 16), ``disparity/p0.png`` (16-bit), ``calib.txt``."""
    root = workdir / "stereo"
    for side in ("left", "right", "disparity"):
        (root / side).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for side in ("left", "right"):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / side / "p0.png")
    disparity = (rng.uniform(0, 6, (12, 16)) * 256).astype(np.uint16)
    (root / "disparity" / "p0.png").write_bytes(png16_bytes(disparity))
    (root / "calib.txt").write_text(MOTORCYCLE_CALIB)

    def run() -> None:
        from structpred.data.stereo_real import open_stereo_folder

        data = open_stereo_folder(root, "train")
        views, target = data[0]
        where = f"{root} [0]"
        if views.dim() != 4 or views.shape[0] != 2:
            raise WrongResult(f"{where}: views {tuple(views.shape)}")
        h, w = check_image(views[0], where)
        d, valid = target["disparity"], target["valid"]
        if tuple(d.shape) != (1, h, w) or tuple(valid.shape) != (h, w) or valid.dtype != torch.bool:
            raise WrongResult(f"{where}: disparity {tuple(d.shape)} / valid {tuple(valid.shape)}")
        if not bool(torch.isfinite(d).all()) or float(d.min()) < 0 or float(d.max()) > w:
            raise WrongResult(f"{where}: disparity outside [0, {w}] or not finite")
        if bool((valid & (d[0] <= 0)).any()):
            raise WrongResult(f"{where}: a valid pixel with disparity 0")

    return root / "disparity" / "p0.png", run


def _direct(suffix: str, read: Callable[[Path], None]) -> Setup:
    def setup(workdir: Path) -> tuple[Path, Callable[[], None]]:
        path = workdir / f"input{suffix}"
        return path, lambda: read(path)

    return setup


STEREO_TARGETS: list[Target] = [
    Target("calib_txt", "stereo_real", mutate.mutate_bytes, _direct(".txt", _read_calib)),
    Target("pfm", "stereo_real", mutate_pfm, _direct(".pfm", _read_pfm)),
    Target("stereo_folder_png", "stereo_real", mutate.mutate_png, _stereo_folder),
]


def _calib_seeds() -> dict[str, bytes]:
    return {
        "motorcycle.txt": MOTORCYCLE_CALIB.encode(),
        "no_doffs.txt": b"cam0=[100 0 50; 0 100 40; 0 0 1]\ncam1=[100 0 53; 0 100 40; 0 0 1]\nbaseline=120\n",
    }


def _pfm_seeds() -> dict[str, bytes]:
    values = np.arange(20, dtype=np.float32).reshape(4, 5)
    values[0, 0] = np.inf
    return {"little.pfm": pfm_bytes(values), "big.pfm": pfm_bytes(values, little=False)}


def _folder_seeds() -> dict[str, bytes]:
    return {"d16.png": png16_bytes(np.full((12, 16), 3 * 256)), "zeros.png": png16_bytes(np.zeros((12, 16)))}


CORPUS_FILES: dict[str, Callable[[], dict[str, bytes]]] = {
    "calib_txt": _calib_seeds,
    "pfm": _pfm_seeds,
    "stereo_folder_png": _folder_seeds,
}


def write_corpus() -> None:
    """Write ``tests/fuzz/corpus/<target>/`` of the stereo targets."""
    for name, make in CORPUS_FILES.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, data in make().items():
            (folder / file).write_bytes(data)


if __name__ == "__main__":
    write_corpus()
