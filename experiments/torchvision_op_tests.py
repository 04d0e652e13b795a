"""torchvision's own op tests (``test/test_ops.py``) run against ``structpred.ops``.

Each test calls ``torchvision.ops.<op>`` through its module's ``ops`` name; while a test runs,
that name is swapped for a namespace in which the op *under test* is structpred's and
everything else — the references the test compares with (``_reference_nms`` calls
``ops.box_iou``), torchvision's internals — stays torchvision's. Prints passed / failed /
skipped per op, then every failure grouped by its reason.

    .venv/bin/python experiments/torchvision_op_tests.py                   # all ops
    .venv/bin/python experiments/torchvision_op_tests.py -k RoIAlign -v    # one class, names
    .venv/bin/python experiments/torchvision_op_tests.py --src /tmp/old    # another checkout

The test file is an excerpt of torchvision's (``experiments/peer_tests/``, see its README).
Results and the reason for every remaining failure: ``docs/peer_tests.md``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE / "peer_tests"

# Test class -> (op label for the counts, the torchvision.ops names it tests).
UNDER_TEST: dict[str, tuple[str, tuple[str, ...]]] = {
    "TestRoiPool": ("roi_pool", ("roi_pool", "RoIPool")),
    # its boxes-shape helper also calls ops.roi_pool
    "TestRoIAlign": ("roi_align", ("roi_align", "RoIAlign", "roi_pool")),
    "TestMultiScaleRoIAlign": ("MultiScaleRoIAlign", ("poolers.MultiScaleRoIAlign",)),
    "TestNMS": ("nms", ("nms", "batched_nms")),
    "TestFrozenBNT": ("FrozenBatchNorm2d", ("misc.FrozenBatchNorm2d",)),
    "TestBoxConvert": ("box_convert", ("box_convert",)),
    "TestBoxArea": ("box_area", ("box_area",)),
    "TestBoxIou": ("box_iou", ("box_iou",)),
    "TestGeneralizedBoxIou": ("generalized_box_iou", ("generalized_box_iou",)),
}
BATCHED = "test_batched_nms_implementations"  # a TestNMS test of batched_nms


def ours() -> dict[str, Any]:
    """structpred's counterpart of every torchvision.ops name the tests patch."""
    from torch import Tensor, nn

    from structpred import ops
    from structpred.layers import MultiScaleRoIAlign
    from structpred.layers.frozen_bn import FrozenBatchNorm2d

    class RoIAlign(nn.Module):
        """torchvision's ``RoIAlign`` module signature over :func:`structpred.ops.roi_align`."""

        def __init__(
            self, output_size: Any, spatial_scale: float, sampling_ratio: int, aligned: bool = False
        ) -> None:
            super().__init__()
            self.output_size, self.spatial_scale = output_size, spatial_scale
            self.sampling_ratio, self.aligned = sampling_ratio, aligned

        def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
            return ops.roi_align(
                input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
            )

    class RoIPool(nn.Module):
        """torchvision's ``RoIPool`` module signature over :func:`structpred.ops.roi_pool`."""

        def __init__(self, output_size: Any, spatial_scale: float) -> None:
            super().__init__()
            self.output_size, self.spatial_scale = output_size, spatial_scale

        def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
            return ops.roi_pool(input, rois, self.output_size, self.spatial_scale)

    return {
        "roi_align": ops.roi_align,
        "RoIAlign": RoIAlign,
        "roi_pool": ops.roi_pool,
        "RoIPool": RoIPool,
        "poolers.MultiScaleRoIAlign": MultiScaleRoIAlign,
        "nms": ops.nms,
        "batched_nms": ops.batched_nms,
        "misc.FrozenBatchNorm2d": FrozenBatchNorm2d,
        "box_convert": ops.box_convert,
        "box_area": ops.box_area,
        "box_iou": ops.box_iou,
        "generalized_box_iou": ops.generalized_box_iou,
    }


class _Namespace(types.SimpleNamespace):
    """A module stand-in: the given names, then the wrapped module's attributes."""

    def __init__(self, base: Any, names: dict[str, Any]) -> None:
        super().__init__(**names)
        object.__setattr__(self, "_base", base)

    def __getattr__(self, name: str) -> Any:  # only for names not set above
        return getattr(object.__getattribute__(self, "_base"), name)


def patched_ops(base: Any, patch: dict[str, Any]) -> _Namespace:
    """``base`` (torchvision.ops) with the dotted names of ``patch`` replaced."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    for name, value in patch.items():
        head, _, rest = name.partition(".")
        if rest:
            nested[head][rest] = value
        else:
            top[name] = value
    for head, names in nested.items():
        top[head] = patched_ops(getattr(base, head), names)
    return _Namespace(base, top)


class Plugin:
    """Swaps the test module's ``ops`` for the patched namespace around each test; tallies."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.failures: dict[str, dict[str, list[str]]] = collections.defaultdict(
            lambda: collections.defaultdict(list)
        )

    def pytest_configure(self, config: pytest.Config) -> None:
        for mark in ("opcheck_only_one", "needs_cuda", "needs_mps"):
            config.addinivalue_line("markers", f"{mark}: torchvision's test marker")

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """What torchvision's conftest does: ``needs_cuda`` / ``needs_mps`` marks skip."""
        import torch

        missing = {
            "needs_cuda": not torch.cuda.is_available(),
            "needs_mps": not torch.backends.mps.is_available(),
        }
        for item in items:
            for mark, absent in missing.items():
                if absent and item.get_closest_marker(mark) is not None:
                    item.add_marker(pytest.mark.skip(reason=f"{mark}: no such device here"))

    @staticmethod
    def _label(nodeid: str) -> str | None:
        parts = nodeid.split("::")
        cls = parts[1] if len(parts) > 2 else ""
        if cls not in UNDER_TEST:
            return None
        if cls == "TestNMS" and parts[-1].startswith(BATCHED):
            return "batched_nms"
        return UNDER_TEST[cls][0]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        module = item.module  # type: ignore[attr-defined]
        cls = item.cls.__name__ if item.cls is not None else ""  # type: ignore[attr-defined]
        original = module.ops
        names = UNDER_TEST[cls][1] if cls in UNDER_TEST else ()
        module.ops = patched_ops(original, {n: self.table[n] for n in names})
        try:
            yield
        finally:
            module.ops = original

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        label = self._label(report.nodeid)
        if label is None:
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome
            self.counts[label][outcome] += 1
            if report.failed:
                crash = getattr(report.longrepr, "reprcrash", None)
                lines = [ln for ln in (crash.message if crash is not None else "").splitlines() if ln.strip()]
                # "RuntimeError:" alone on its line (TorchScript's errors): add the next line
                short = len(lines) > 1 and lines[0].rstrip().endswith(":") and len(lines[0]) < 30
                reason = (" ".join(lines[:2]) if short else lines[0] if lines else "?")[:150]
                name = report.nodeid.split("::", 1)[1]
                self.failures[label][reason].append(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the peer tests; print the counts per op and the failures by reason."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=Path, default=TESTS, help="folder with test_ops.py")
    parser.add_argument("--src", type=Path, help="import structpred from this checkout instead")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("-v", "--verbose", action="store_true", help="list each failing test")
    args = parser.parse_args(argv)
    test_file = args.tests / "test_ops.py"
    if not test_file.is_file():
        print(f"error: {test_file} not found (see experiments/peer_tests/README.md)", file=sys.stderr)
        return 2
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))
    plugin = Plugin(ours())
    pytest_args = [str(test_file), "-q", "-p", "no:cacheprovider", "-c", os.devnull]
    pytest_args += ["--rootdir", str(args.tests), "--tb=no", "-rN", "--no-header"]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    pytest.main(pytest_args, plugins=[plugin])

    import structpred

    print(f"\nstructpred from {Path(structpred.__file__).parent}")
    print(f"{'op':<22}{'passed':>8}{'failed':>8}{'skipped':>9}")
    total: collections.Counter[str] = collections.Counter()
    for label in sorted(plugin.counts):
        c = plugin.counts[label]
        total.update(c)
        print(f"{label:<22}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    print(f"{'total':<22}{total['passed']:>8}{total['failed']:>8}{total['skipped']:>9}")
    for label in sorted(plugin.failures):
        print(f"\n{label} failures:")
        for reason, names in sorted(plugin.failures[label].items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(names):>3} x {reason}")
            if args.verbose:
                for name in names:
                    print(f"        {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
