"""`structpred predict` of a detector on a video links its boxes into tubes (issue 20): rows get a
``track_id``, ``<video stem>_tubes.txt`` holds MOTChallenge rows; images and other videos apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from structpred.data.formats.mot import read_mot
from structpred.data.images import write_image
from structpred.tasks import get_task
from structpred.tasks.base import PredictJob
from structpred.tasks.outputs import output_stems
from structpred.tasks.predict_loop import run_predict
from tests.tasks.predict_cases import make_video


class MovingBoxes(nn.Module):
    """Per call, for each image: a box sliding right 2 px per call and a fixed one, scores 0.9 / 0.8;
    every 5th call the sliding box is missing (a missed detection)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, images: list[Tensor], targets: object = None) -> tuple[list[dict[str, Tensor]], dict]:
        preds = []
        for _ in images:
            t = self.calls
            self.calls += 1
            boxes = [[40.0, 30.0, 56.0, 46.0]]
            scores, labels = [0.8], [2]
            if t % 5 != 4:
                boxes.insert(0, [2.0 + 2 * t, 10.0, 14.0 + 2 * t, 22.0])
                scores.insert(0, 0.9)
                labels.insert(0, 1)
            preds.append(
                {"boxes": torch.tensor(boxes), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}
            )
        return preds, {}


def _job(paths: list[Path], out: Path) -> PredictJob:
    out.mkdir(parents=True, exist_ok=True)
    stems = output_stems(paths, out)
    return PredictJob(paths, out, ("square", "disc"), (1, 2), 0.5, 4, stems, progress=False)


def test_video_detections_become_tubes_with_track_ids(tmp_path: Path) -> None:
    video = make_video(tmp_path / "in" / "clip.mp4", frames=12)
    image = tmp_path / "in" / "still.png"
    write_image(image, torch.rand(3, 48, 64))
    out = tmp_path / "out"
    job = _job([video, image], out)
    run_predict(get_task("detection"), MovingBoxes(), job)
    rows = json.loads((out / "predictions.json").read_text())
    video_rows = [r for r in rows if r["file_name"] == str(video)]
    assert all("track_id" in r for r in video_rows)  # every kept box is in a tube (a 1-frame gap is bridged)
    ids = {(r["category_id"], r["track_id"]) for r in video_rows}
    assert len(ids) == 2 and len({i for _, i in ids}) == 2  # one identity per object, across the gap
    assert not any("track_id" in r for r in rows if r["file_name"] == str(image))  # a still image: no tube
    mot = read_mot(out / "clip_tubes.txt")
    assert len(mot.frames) == len(video_rows)
    assert set(mot.frames.tolist()) == set(range(1, 13))  # 1-based frames
    sliding = [r for r in video_rows if r["category_id"] == 1]
    track = {r["track_id"] for r in sliding}.pop()
    mine = mot.ids == track
    xs = [r["bbox"][0] for r in sorted(sliding, key=lambda r: r["frame"])]
    assert np.allclose(mot.boxes[mine][:, 0], xs)


def test_below_threshold_boxes_are_not_linked_and_an_empty_video_writes_an_empty_file(tmp_path: Path) -> None:
    video = make_video(tmp_path / "a.mkv", frames=4)
    out = tmp_path / "out"
    job = _job([video], out)
    job = PredictJob(**{**job.__dict__, "score_threshold": 0.95})  # above every score
    run_predict(get_task("detection"), MovingBoxes(), job)
    rows = json.loads((out / "predictions.json").read_text())
    assert rows and not any("track_id" in r for r in rows)
    assert (out / "a_tubes.txt").read_text() == ""
