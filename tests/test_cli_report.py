"""``structpred eval --report DIR`` end to end, looked at in a real headless Chromium.

Tiny 1-epoch checkpoints of a detector and a semantic segmenter are trained once for the
module; each report page is loaded from disk by Debian's Chromium driven by playwright: no
console or page errors, no failed or external requests, the metric table's text shown, every
picture decoded, and a screenshot that is not blank. Without /usr/bin/chromium the browser
tests skip, unless STRUCTPRED_REQUIRE_DATA=1 (CI, ``make unit``), where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from structpred.cli import main

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DATA = ["--data-arg", "size=64", "--data-arg", "num_images=4"]
RUNS = {
    "detection": (
        ["--model", "fasterrcnn_narrow_fpn", "--lr", "0.01", "--model-arg", "width=8",
         "--model-arg", "fpn_channels=16", "--model-arg", "representation_size=32"],
        ["map_50", "box AP50", "background / missed"],
    ),
    "segmentation": (
        ["--model", "fcn8s_narrow", "--lr", "0.003", "--optimizer", "adamw", "--model-arg", "width_div=16",
         "--model-arg", "fc_channels=16"],
        ["miou", "accuracy (recall)", "mIoU"],
    ),
}  # fmt: skip


def need_chromium() -> None:
    """Skip (or fail under STRUCTPRED_REQUIRE_DATA=1) without Chromium or playwright."""
    problem = None
    if not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing (`make browser` installs Debian's chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as err:
            problem = f"playwright is not importable ({err})"
    if problem is None:
        return
    if os.environ.get("STRUCTPRED_REQUIRE_DATA") == "1":
        pytest.fail(f"STRUCTPRED_REQUIRE_DATA=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """``{kind: DIR}``: a 1-epoch run of each kind evaluated with ``--report DIR``."""
    root = tmp_path_factory.mktemp("report_runs")
    out = {}
    for kind, (model_args, _) in RUNS.items():
        run = root / kind
        argv = ["train", *model_args, "--data", "shapes", "--epochs", "1", "--batch-size", "2",
                "--no-progress", "--out", str(run), *DATA]  # fmt: skip
        assert main(argv) == 0
        report = root / f"{kind}_report"
        assert (
            main(["eval", "--checkpoint", str(run), "--split", "test", "--report", str(report), *DATA]) == 0
        )
        out[kind] = report
    out["root"] = root
    return out


@pytest.mark.parametrize("kind", list(RUNS))
def test_report_page_in_chromium(reports, kind, tmp_path) -> None:
    need_chromium()
    from playwright.sync_api import sync_playwright

    page_file = reports[kind] / "index.html"
    assert sorted(p.name for p in reports[kind].iterdir()) == ["index.html"]  # one file, nothing beside
    errors: list[str] = []
    requests: list[str] = []
    shot = tmp_path / f"{kind}.png"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 900},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"failed request: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            text = page.inner_text("body")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    assert errors == []
    assert all(u.startswith(("file://", "data:")) for u in requests), (
        requests
    )  # nothing fetched from a network
    for needle in RUNS[kind][1]:
        assert needle in text, needle
    assert "Metrics" in text and "Best and worst images" in text and "Worst" in text
    assert widths and all(w > 0 for w in widths), widths  # every picture decoded
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.shape[1] == 1100 and pixels.shape[0] > 900  # the full page, longer than one screen
    assert pixels.std() > 20.0  # not blank: text, tables and pictures


def test_report_folder_rules_from_the_cli(reports, capsys) -> None:
    run, root = reports["root"] / "detection", reports["root"]
    # (A previous report is replaced: tests/engine/test_report.py.) A foreign index.html is
    # never overwritten; refused before the evaluation, in one line.
    site = root / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>mine</p>")
    assert main(["eval", "--checkpoint", str(run), "--split", "test", "--report", str(site), *DATA]) == 2
    err = capsys.readouterr()
    assert "not a structpred report" in err.err and err.err.count("\n") == 1 and "map" not in err.out
    assert (site / "index.html").read_text() == "<p>mine</p>"
    # Inside the dataset folder: refused before the data is read (the folder is not even a dataset).
    data = root / "data"
    data.mkdir()
    argv = ["eval", "--checkpoint", str(run), "--data", f"coco:{data}", "--report", str(data / "report")]
    assert main(argv) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (data / "report").exists()
