"""(Scaffold: the vit benchmark is being written in issue 17.)"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    raise SystemExit("the vit benchmark is not written yet")
