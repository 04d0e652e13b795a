"""The predict loop's parts: videos decoded frame by frame (bad ones named), image ids by file
name from a COCO json, category tables checked against the checkpoint's, lazy batches."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from structpred.data import limits
from structpred.data.images import write_image
from structpred.data.records import Categories
from structpred.progress import progress
from structpred.tasks.coco_ids import checked_category_ids, image_ids_by_file_name
from structpred.tasks.outputs import expand_inputs, output_stems
from structpred.tasks.predict_loop import batched, probe_inputs
from structpred.tasks.video_frames import VideoWriter, iter_frames, probe_video
from tests.tasks.predict_cases import make_video


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mov", ".mkv", ".webm"])
def test_every_video_container_decodes_frame_by_frame(tmp_path: Path, suffix: str) -> None:
    video = make_video(tmp_path / f"clip{suffix}", frames=6)
    info = probe_video(video)
    assert (info.height, info.width, info.fps) == (48, 64, 10.0)
    frames = list(iter_frames(video))
    assert [(i, round(t, 3)) for i, t, _ in frames] == [(k, k / 10) for k in range(6)]
    first = frames[0][2]
    assert first.shape == (3, 48, 64) and first.dtype == torch.float32
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    red = first[:, 14:22, 2:12].mean((1, 2))  # inside the red square of frame 0 (lossy codecs)
    assert red[0] > 0.6 and red[1] < 0.35 and red[2] < 0.35


def test_frames_are_decoded_lazily(tmp_path: Path) -> None:
    frames = iter_frames(make_video(tmp_path / "clip.mkv", frames=12))
    index, _, _ = next(frames)  # one frame decoded, the rest not yet
    assert index == 0
    frames.close()  # the container is closed early without error


def test_a_frame_over_the_pixel_limit_is_refused_from_the_header(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", frames=2, height=48, width=64)
    with limits.override(max_pixels=48 * 64):
        assert probe_video(video).height == 48  # at the limit: read
    with (
        limits.override(max_pixels=48 * 64 - 1),
        pytest.raises(limits.LimitError, match="clip.mp4: frame size 48 x 64"),
    ):
        next(iter_frames(video))


def test_truncated_video_is_found_while_decoding(tmp_path: Path) -> None:
    data = make_video(tmp_path / "full.webm", frames=30).read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) // 2])
    probe_video(cut)  # the header is intact
    seen = []
    with pytest.raises(ValueError, match=r"cut\.webm: truncated: decoding stopped at .* of 3\.00 s"):
        for index, _, _ in iter_frames(cut):
            seen.append(index)
    assert 0 < len(seen) < 30


@pytest.mark.parametrize(
    ("content", "match"), [(b"", "not a readable video"), (b"hello", "not a readable video")]
)
def test_not_a_video_is_named(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"x\.mp4: {match}"):
        probe_video(path)
    with pytest.raises(ValueError, match="video file not found"):
        probe_video(tmp_path / "missing.mkv")


def test_video_writer_pads_odd_sizes_and_reads_back(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "o.mp4", fps=5) as writer:
        for k in range(3):
            writer.write(torch.full((3, 21, 33), 60 * k, dtype=torch.uint8))
    frames = list(iter_frames(tmp_path / "o.mp4"))
    assert [f.shape for _, _, f in frames] == [(3, 22, 34)] * 3
    assert [round(t, 3) for _, t, _ in frames] == [0.0, 0.2, 0.4]


def test_inputs_mix_images_and_videos_and_probe_counts_frames(tmp_path: Path) -> None:
    make_video(tmp_path / "in" / "b.mp4", frames=7)
    write_image(tmp_path / "in" / "a.png", torch.rand(3, 8, 8))
    (tmp_path / "in" / "notes.txt").write_text("skip me")
    paths = expand_inputs([tmp_path / "in"])
    assert [p.name for p in paths] == ["a.png", "b.mp4"]
    assert probe_inputs(paths) == 1 + 7
    assert [str(s) for s in output_stems(paths, tmp_path / "out")] == ["a", "b"]
    write_image(tmp_path / "in" / "sub" / "b" / "i.png", torch.rand(3, 8, 8))
    inputs = [tmp_path / "in" / "b.mp4", tmp_path / "in" / "sub" / "b" / "i.png"]
    with pytest.raises(ValueError, match=r"b\.mp4 beside the inputs in .*in/sub/b"):  # frames in in/sub/b/
        output_stems(inputs, tmp_path / "in" / "sub")
    (tmp_path / "in" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ValueError, match="c.png"):
        probe_inputs([tmp_path / "in" / "c.png"])


def test_batches_are_lazy() -> None:
    pulled = []

    def items():
        for k in range(7):
            pulled.append(k)
            yield k

    batches = batched(items(), 3)
    assert next(batches) == [0, 1, 2] and pulled == [0, 1, 2]
    assert list(batches) == [[3, 4, 5], [6]]


def test_progress_in_a_log_is_a_few_lines() -> None:
    log = io.StringIO()
    assert list(progress(iter(range(40)), total=40, desc="predict", file=log)) == list(range(40))
    lines = log.getvalue().splitlines()
    assert 3 <= len(lines) <= 6 and lines[0].startswith("predict: start") and "done 40/40" in lines[-1]


def _coco(path: Path, file_names: list[str]) -> Path:
    images = [{"id": 10 + k, "file_name": f, "height": 4, "width": 4} for k, f in enumerate(file_names)]
    categories = [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    return path


def test_image_ids_by_file_name_longest_match_wins(tmp_path: Path) -> None:
    coco = _coco(tmp_path / "gt.json", ["a/x.jpg", "b/x.jpg", "y.jpg"])
    ids, categories = image_ids_by_file_name(
        [tmp_path / "data" / "b" / "x.jpg", tmp_path / "y.jpg", tmp_path / "a" / "x.jpg"], coco
    )
    assert ids == [11, 12, 10]
    assert (categories.names, categories.ids) == (["dog", "cat"], [2, 5])  # sorted by id
    with pytest.raises(ValueError, match=r"z\.jpg: no image of .*gt\.json"):
        image_ids_by_file_name([tmp_path / "z.jpg"], coco)
    twice = _coco(tmp_path / "twice.json", ["a/x.jpg", "b/x.jpg", "x.jpg", "c/x.jpg"])
    ids, _ = image_ids_by_file_name([tmp_path / "x.jpg"], twice)
    assert ids == [12]  # "x.jpg" names it; a/x.jpg and b/x.jpg need their folder
    with pytest.raises(ValueError, match=r"a/y\.jpg and .*b/y\.jpg both match image id 12"):
        image_ids_by_file_name([tmp_path / "a" / "y.jpg", tmp_path / "b" / "y.jpg"], coco)
    ambiguous = _coco(tmp_path / "ambiguous.json", ["x.jpg", "x.jpg"])
    with pytest.raises(ValueError, match=r"2 images of .* have the file name x\.jpg \(ids \[10, 11\]\)"):
        image_ids_by_file_name([tmp_path / "x.jpg"], ambiguous)


def test_category_tables_must_agree() -> None:
    data = Categories(["dog", "cat"], [2, 5])
    assert checked_category_ids(["dog", "cat"], [2, 5], data, "gt.json") == [2, 5]
    assert checked_category_ids([], [], data, "gt.json") == [2, 5]  # nothing recorded: the data's
    assert checked_category_ids(["dog", "cat"], [2, 5], None, "") == [2, 5]
    assert checked_category_ids(["dog", "cat"], [], data, "gt.json") == [2, 5]  # names only: checked
    with pytest.raises(
        ValueError, match="mismatch at label 2: the checkpoint has id 6 'cat', gt.json has id 5 'cat'"
    ):
        checked_category_ids(["dog", "cat"], [2, 6], data, "gt.json")
    with pytest.raises(ValueError, match="mismatch at label 1: the checkpoint has id 2 'wolf'"):
        checked_category_ids(["wolf", "cat"], [2, 5], data, "gt.json")
    with pytest.raises(ValueError, match="trained on 3 categories .* gt.json has 2"):
        checked_category_ids(["dog", "cat", "cow"], [2, 5, 7], data, "gt.json")


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("optical_flow", "optical flow needs frame pairs, got one image"),  # images are frames in order
        ("lstm_vowels", "classifies sequences, not image files"),
    ],
)
def test_tasks_without_single_image_inputs_refuse_before_writing(
    tmp_path: Path, task: str, message: str
) -> None:
    from structpred.models import get_model
    from structpred.tasks import get_task, task_of
    from structpred.tasks.base import PredictJob

    write_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    model = get_model(task) if task == "lstm_vowels" else torch.nn.Linear(1, 1)
    owner = task_of(task) if task == "lstm_vowels" else get_task(task)
    with pytest.raises(ValueError, match=message):
        owner.predict_files(model, PredictJob([tmp_path / "a.png"], tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_missing_pyav_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(ValueError, match=r"video input needs PyAV: pip install 'structpred\[video\]'"):
        probe_video(tmp_path / "clip.mp4")
