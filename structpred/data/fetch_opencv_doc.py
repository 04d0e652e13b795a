"""Put OpenCV's example data into the local cache: ``python -m structpred.data.fetch_opencv_doc``.

The flow and stereo pairs with real ground truth (graf1/graf3 + ``H1to3p.xml``, Aloe + ``aloeGT.png``),
the Middlebury RubberWhale / Basketball frames and the ``vtest.avi`` video come from Debian's
``opencv-doc`` package (``usr/share/doc/opencv-doc/examples/data/``; Apache-2.0 / BSD-3 OpenCV
sample data). This runs ``apt-get download opencv-doc`` in a temporary folder (``apt-get update``
first only if the download fails), unpacks it with ``dpkg -x`` there and copies the regular files
directly under ``examples/data/`` into ``<root>/opencv-doc/`` (root: ``$STRUCTPRED_DATA``, default
``~/.cache/structpred``). Sub-folders (``dnn/``) are skipped, as are symlinks and names that are not
plain file names: no path from the package is trusted. Does nothing when the files the readers
need (``REQUIRED``) are already there.

On a machine without ``apt-get`` / ``dpkg`` (not Debian or Ubuntu) it raises
:class:`OpenCVDocUnavailable`; run as a module it then prints one line and exits 0, so ``make
data`` goes on and the tests needing these files skip (they fail under ``STRUCTPRED_REQUIRE_DATA=1``).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .shakespeare import DataNotFoundError, data_root

logger = logging.getLogger(__name__)

PACKAGE = "opencv-doc"
SUBDIR = "opencv-doc"
EXAMPLES_DATA = ("usr", "share", "doc", "opencv-doc", "examples", "data")
FETCH_COMMAND = "make data (or: python -m structpred.data.fetch_opencv_doc)"
# The files structpred's readers use; their presence means "already fetched".
REQUIRED = (
    "graf1.png",
    "graf3.png",
    "H1to3p.xml",
    "aloeL.jpg",
    "aloeR.jpg",
    "aloeGT.png",
    "rubberwhale1.png",
    "rubberwhale2.png",
    "basketball1.png",
    "basketball2.png",
    "vtest.avi",
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class OpenCVDocUnavailable(DataNotFoundError):
    """The package cannot be fetched on this machine (no ``apt-get`` or ``dpkg``)."""


def opencv_doc_dir(root: str | Path | None = None) -> Path:
    """``<root>/opencv-doc`` (root default: ``$STRUCTPRED_DATA`` or ``~/.cache/structpred``), unchecked."""
    base = Path(root).expanduser() if root is not None else data_root()
    return base / SUBDIR


def opencv_doc_file(name: str, root: str | Path | None = None) -> Path:
    """Path of one example file; :class:`DataNotFoundError` naming the file and ``make data`` if absent."""
    path = opencv_doc_dir(root) / name
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found: OpenCV's example data is fetched by {FETCH_COMMAND}")
    return path


def missing_files(root: str | Path | None = None) -> list[str]:
    """The names in ``REQUIRED`` not yet in ``<root>/opencv-doc``."""
    folder = opencv_doc_dir(root)
    return [name for name in REQUIRED if not (folder / name).is_file()]


def copy_examples(tree: Path, dest: Path) -> int:
    """Copy the regular files directly under ``tree/usr/share/doc/opencv-doc/examples/data`` into ``dest``.

    ``tree`` is an unpacked package (``dpkg -x``). Only regular, non-symlink files whose names are
    plain (letters, digits, ``._+-``; no leading dot) are written, each by its base name; returns
    how many. ``DataNotFoundError`` if the package has no such folder.
    """
    source = tree.joinpath(*EXAMPLES_DATA)
    if source.is_symlink() or not source.is_dir():
        raise DataNotFoundError(f"the {PACKAGE} package has no {'/'.join(EXAMPLES_DATA)} folder")
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for entry in sorted(source.iterdir()):
        if entry.is_symlink() or not entry.is_file() or not _SAFE_NAME.match(entry.name):
            logger.debug("skipping %s", entry.name)
            continue
        target = dest / entry.name
        partial = dest / f".{entry.name}.part"
        shutil.copyfile(entry, partial)
        partial.replace(target)  # atomic: an interrupted copy never leaves a truncated file
        count += 1
    return count


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    logger.info("running %s", " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def download_deb(folder: Path) -> Path:
    """``apt-get download opencv-doc`` into ``folder`` (``apt-get update`` and retry once on failure)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise OpenCVDocUnavailable(
            f"apt-get / dpkg not found (not a Debian or Ubuntu machine): cannot fetch {PACKAGE}; "
            "the tests needing OpenCV's example data will skip"
        )
    done = _run(["apt-get", "download", PACKAGE], folder)
    if done.returncode != 0:
        logger.info("apt-get download failed (%s); running apt-get update", done.stderr.strip()[-200:])
        _run(["apt-get", "update"], folder)
        done = _run(["apt-get", "download", PACKAGE], folder)
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if done.returncode != 0 or not debs:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise DataNotFoundError(f"`apt-get download {PACKAGE}` failed: {last[0]}")
    return debs[0]


def fetch_opencv_doc(root: str | Path | None = None, deb: str | Path | None = None) -> Path:
    """Make sure OpenCV's example data is in ``<root>/opencv-doc``; returns that folder.

    Args:
        root: cache root (default: ``$STRUCTPRED_DATA`` or ``~/.cache/structpred``).
        deb: an already downloaded ``opencv-doc_*.deb`` (default: ``apt-get download`` it).
    """
    dest = opencv_doc_dir(root)
    if not missing_files(root):
        return dest
    with tempfile.TemporaryDirectory(prefix="structpred-opencv-doc-") as tmp:
        folder = Path(tmp)
        package = Path(deb) if deb is not None else download_deb(folder)
        if shutil.which("dpkg") is None:
            raise OpenCVDocUnavailable(f"dpkg not found: cannot unpack {package.name}")
        tree = folder / "tree"
        done = _run(["dpkg", "-x", str(package), str(tree)], folder)
        if done.returncode != 0:
            raise DataNotFoundError(f"`dpkg -x {package.name}` failed: {done.stderr.strip()[-200:]}")
        count = copy_examples(tree, dest)
    logger.info("wrote %d files to %s", count, dest)
    still = missing_files(root)
    if still:
        raise DataNotFoundError(f"the {PACKAGE} package lacked {', '.join(still)} (in {dest})")
    return dest


def main() -> int:
    """Entry point of ``python -m structpred.data.fetch_opencv_doc``: one line out, no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(fetch_opencv_doc())
    except OpenCVDocUnavailable as err:
        print(f"opencv-doc: skipped: {err}", file=sys.stderr)
        return 0
    except DataNotFoundError as err:
        print(f"opencv-doc: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
