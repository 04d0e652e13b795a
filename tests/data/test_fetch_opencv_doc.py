"""The opencv-doc fetcher: what it copies from an unpacked package, that it trusts no path, that it
does nothing when the files are there, and one line (exit 0) on a machine without apt-get."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from structpred.data import fetch_opencv_doc as fetch
from structpred.data.shakespeare import DataNotFoundError


def make_tree(tmp_path: Path, names: tuple[str, ...] = fetch.REQUIRED) -> Path:
    """A hand-made unpacked package: the required files, a sub-folder, a symlink, a hidden file."""
    tree = tmp_path / "tree"
    data = tree.joinpath(*fetch.EXAMPLES_DATA)
    (data / "dnn").mkdir(parents=True)
    (data / "dnn" / "model.txt").write_text("nested")
    for name in names:
        (data / name).write_bytes(name.encode())
    (data / ".hidden").write_text("x")
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the package")
    os.symlink(outside, data / "link.png")
    return tree


def test_copy_examples_copies_plain_files_only(tmp_path):
    tree = make_tree(tmp_path)
    dest = tmp_path / "cache" / "opencv-doc"
    assert fetch.copy_examples(tree, dest) == len(fetch.REQUIRED)
    assert sorted(p.name for p in dest.iterdir()) == sorted(fetch.REQUIRED)
    assert (dest / "graf1.png").read_bytes() == b"graf1.png"


def test_copy_examples_without_the_folder(tmp_path):
    (tmp_path / "tree" / "usr").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="examples/data"):
        fetch.copy_examples(tmp_path / "tree", tmp_path / "dest")


def test_does_nothing_when_already_there(tmp_path, monkeypatch):
    fetch.copy_examples(make_tree(tmp_path), tmp_path / "root" / "opencv-doc")

    def boom(folder: Path) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(fetch, "download_deb", boom)
    assert fetch.fetch_opencv_doc(tmp_path / "root") == tmp_path / "root" / "opencv-doc"
    assert fetch.missing_files(tmp_path / "root") == []


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed (not Debian)")
def test_fetch_from_a_hand_made_deb(tmp_path):
    tree = make_tree(tmp_path)
    control = tree / "DEBIAN"
    control.mkdir()
    (control / "control").write_text(
        "Package: opencv-doc\nVersion: 0.0-test\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    deb = tmp_path / "opencv-doc_0.0-test_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True
    )
    folder = fetch.fetch_opencv_doc(tmp_path / "root", deb=deb)
    assert sorted(p.name for p in folder.iterdir()) == sorted(fetch.REQUIRED)
    assert fetch.opencv_doc_file("H1to3p.xml", tmp_path / "root").read_bytes() == b"H1to3p.xml"


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed (not Debian)")
def test_fetch_names_what_the_package_lacked(tmp_path):
    tree = make_tree(tmp_path, names=("graf1.png",))
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        "Package: opencv-doc\nVersion: 0.0-test\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    deb = tmp_path / "opencv-doc_0.0-test_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True
    )
    with pytest.raises(DataNotFoundError, match="lacked graf3.png"):
        fetch.fetch_opencv_doc(tmp_path / "root", deb=deb)


def test_missing_file_error_names_file_and_make_data(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"aloeGT\.png.*make data"):
        fetch.opencv_doc_file("aloeGT.png", tmp_path)


def test_no_apt_get_one_line_and_exit_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STRUCTPRED_DATA", str(tmp_path))
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    with pytest.raises(fetch.OpenCVDocUnavailable, match="apt-get"):
        fetch.fetch_opencv_doc()
    assert fetch.main() == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("opencv-doc: skipped:") and "\n" not in err and "Traceback" not in err


def test_download_updates_once_then_reports_failure(tmp_path, monkeypatch, capsys):
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package opencv-doc")

    monkeypatch.setattr(fetch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(fetch, "_run", fake_run)
    with pytest.raises(DataNotFoundError, match="Unable to locate package"):
        fetch.download_deb(tmp_path)
    assert calls == [
        ["apt-get", "download", "opencv-doc"],
        ["apt-get", "update"],
        ["apt-get", "download", "opencv-doc"],
    ]
    monkeypatch.setenv("STRUCTPRED_DATA", str(tmp_path))
    assert fetch.main() == 1
    assert capsys.readouterr().err.strip().count("\n") == 0
