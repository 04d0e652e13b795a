"""Progress that suits where it is shown: a bar on a terminal, a few lines in a log file.

``progress(iterable, total=None, desc="", enabled=True)`` wraps an iterable:

- when the stream (``sys.stderr``) is a terminal, a tqdm bar redraws in place;
- otherwise (``make demo > log 2>&1``, CI, a pipe) it writes only a few summary lines to the
  stream: one at the start, one at each quarter of ``total`` (25 %, 50 %, 75 %) reached at least
  ``min_interval`` seconds after the previous line (a quick loop: none) and one at the end with
  the rate — never thousands of carriage-return updates.

Both kinds take ``update(n)``, ``set_postfix(**values)`` and ``close()`` (the postfix — the
loss, say — is shown in the bar and appended to the summary lines). Used by the trainer and by
``predict``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TextIO, TypeVar

T = TypeVar("T")

#: Fractions of ``total`` at which the non-terminal reporter writes a line.
QUARTERS = (0.25, 0.5, 0.75)


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or stream-like objects without isatty
        return False


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class Progress(Generic[T]):
    """Iterate ``iterable`` and report progress (see the module docstring).

    Args:
        iterable: what to iterate (None: drive it with :meth:`update`).
        total: the number of items (default ``len(iterable)`` when it has one).
        desc: a short label (``"epoch 3/10"``, ``"predict"``).
        enabled: False reports nothing (iteration is unchanged).
        initial: items already done (a resumed epoch).
        file: the stream (default ``sys.stderr``); its ``isatty()`` decides bar vs lines.
        tty: force the choice (None: ask the stream).
        leave: keep the finished bar on screen (terminal only).
        min_interval: seconds between two summary lines (not on a terminal); quarters reached
            sooner are not written (the trainer uses 2 s: a quick validation is two lines).
    """

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        total: int | None = None,
        desc: str = "",
        enabled: bool = True,
        initial: int = 0,
        file: TextIO | None = None,
        tty: bool | None = None,
        leave: bool = False,
        min_interval: float = 0.0,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable) + initial  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.n = initial
        self.initial = initial
        self.file: TextIO = file if file is not None else sys.stderr
        self.tty = _is_tty(self.file) if tty is None else tty
        self.postfix: dict[str, Any] = {}
        self._bar: Any = None
        self._start = time.perf_counter()
        self._last_line = self._start
        self.min_interval = min_interval
        self._next_quarter = 0
        self._closed = False
        if not enabled:
            return
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, leave=leave, file=self.file)
        else:
            done = f" (from {initial})" if initial else ""
            size = f"{total} items" if total is not None else "items"
            self._write(f"{self._label()}start, {size}{done}")
            quarters = [q for q in QUARTERS if total and self.n >= q * total]
            self._next_quarter = len(quarters)  # quarters a resumed run already passed: not reported

    # ------------------------------------------------------------------ reporting
    def _label(self) -> str:
        return f"{self.desc}: " if self.desc else ""

    def _write(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()
        self._last_line = time.perf_counter()

    def _rate(self) -> str:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        return f"{rate:.2f} it/s, {_fmt_time(elapsed)}"

    def _postfix(self) -> str:
        return "".join(f"  {k} {v}" for k, v in self.postfix.items())

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        total = self.total
        if not total:
            return
        passed = None
        while self._next_quarter < len(QUARTERS) and self.n >= QUARTERS[self._next_quarter] * total:
            passed = QUARTERS[self._next_quarter]
            self._next_quarter += 1
        due = time.perf_counter() - self._last_line >= self.min_interval
        if passed is not None and self.n < total and due:
            self._write(f"{self._label()}{self.n}/{total} ({passed:.0%}), {self._rate()}{self._postfix()}")

    def set_postfix(self, **values: Any) -> None:
        """Values shown beside the bar (and on the summary lines), e.g. ``loss="0.412"``."""
        self.postfix = {k: v for k, v in values.items()}
        if self.enabled and self._bar is not None:
            self._bar.set_postfix(values)

    def close(self) -> None:
        """Finish: close the bar, or write the end line with the rate."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            return
        of = f"/{self.total}" if self.total is not None else ""
        self._write(f"{self._label()}done {self.n}{of}, {self._rate()}{self._postfix()}")

    # ------------------------------------------------------------------ protocols
    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("Progress(None) is driven by update(); there is nothing to iterate")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("this progress has no total")
        return self.total - self.initial

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable[T] | None = None,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    **kwargs: Any,
) -> Progress[T]:
    """Wrap ``iterable`` in a :class:`Progress` (bar on a terminal, a few lines otherwise).

    Example::

        for images, targets in progress(loader, desc="epoch 1/10"):
            ...

    ``kwargs`` go to :class:`Progress` (``initial``, ``file``, ``tty``, ``leave``, ``min_interval``).
    """
    return Progress(iterable, total=total, desc=desc, enabled=enabled, **kwargs)
