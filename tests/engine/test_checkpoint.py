"""Checkpoints: safetensors + JSON, atomic, keep-last-N, exact restore, clear errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from structpred.engine import checkpoint as ckpt
from structpred.models import get_model


def _model_and_optimizer(kind: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = get_model("digits_cnn", width=4)
    params = model.parameters()
    opt = (
        torch.optim.SGD(params, lr=0.1, momentum=0.9) if kind == "sgd" else torch.optim.AdamW(params, lr=0.01)
    )
    loss = model(torch.rand(2, 3, 32, 32), [{"labels": torch.tensor(1)}, {"labels": torch.tensor(3)}])[1]
    loss["loss_cls"].backward()
    opt.step()  # momentum buffers / Adam moments exist now
    return model, opt


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_round_trip_restores_weights_optimizer_and_rng(tmp_path: Path, kind: str) -> None:
    model, opt = _model_and_optimizer(kind)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    path = ckpt.save_checkpoint(tmp_path, 17, model, opt, {"config": {}, "epoch": 2, "step_in_epoch": 3})
    expected = (torch.rand(3), np.random.rand(), random.random())  # draws right after saving

    model2, opt2 = _model_and_optimizer(kind)
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    tensors, meta = ckpt.load_checkpoint(tmp_path)  # the directory resolves to the newest
    assert meta["step"] == 17 and meta["epoch"] == 2 and meta["step_in_epoch"] == 3
    ckpt.restore(tensors, meta, model2, opt2)
    for (n1, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), n1
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for pid in s1["state"]:
        for key, value in s1["state"][pid].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][pid][key])), (pid, key)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.random.rand() == expected[1]
    assert random.random() == expected[2]
    assert path.with_suffix(".safetensors").exists()


def test_keep_last_n_and_latest(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer("sgd")
    for step in (5, 10, 15, 20):
        ckpt.save_checkpoint(
            tmp_path, step, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": step}, keep_last=2
        )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "ckpt-00000015.json",
        "ckpt-00000015.safetensors",
        "ckpt-00000020.json",
        "ckpt-00000020.safetensors",
    ]
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000020.json"


def test_half_written_checkpoint_is_ignored(tmp_path: Path) -> None:
    # A kill between the two renames leaves weights without their JSON, or a temp file:
    # neither may be taken for a checkpoint.
    model, opt = _model_and_optimizer("sgd")
    ckpt.save_checkpoint(tmp_path, 5, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 5})
    (tmp_path / "ckpt-00000010.safetensors").write_bytes(b"partial")
    (tmp_path / ".ckpt-00000010.json.tmp-123").write_text("{")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000005.json"


def test_no_pickle_in_checkpoint(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer("adamw")
    path = ckpt.save_checkpoint(tmp_path, 1, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 1})
    json.loads(path.read_text())  # plain JSON
    assert path.with_suffix(".safetensors").read_bytes()[8:9] == b"{"  # safetensors header


def test_bad_checkpoints_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    (tmp_path / "ckpt-00000001.json").write_text("{not json")
    with pytest.raises(ValueError, match="ckpt-00000001.json"):
        ckpt.load_checkpoint(tmp_path / "ckpt-00000001.json")
    model, opt = _model_and_optimizer("sgd")
    path = ckpt.save_checkpoint(tmp_path, 2, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 2})
    state = json.loads(path.read_text())
    del state["weights_sha256"], state["weights_bytes"]  # as written before the checksum
    path.write_text(json.dumps(state))
    (tmp_path / "ckpt-00000002.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="ckpt-00000002.safetensors"):
        ckpt.load_checkpoint(tmp_path / "ckpt-00000002.json")


def test_checksum_is_verified_on_load(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer("sgd")
    path = ckpt.save_checkpoint(tmp_path, 3, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 3})
    meta = json.loads(path.read_text())
    weights = path.with_suffix(".safetensors")
    assert meta["weights_bytes"] == weights.stat().st_size and len(meta["weights_sha256"]) == 64
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # one bit of the last tensor
    weights.write_bytes(bytes(blob))
    assert ckpt.latest_checkpoint(tmp_path) == path  # complete (right size), but corrupt:
    with pytest.raises(ValueError, match=r"ckpt-00000003\.safetensors: SHA-256 differs"):
        ckpt.load_checkpoint(tmp_path)


def test_a_kill_between_the_files_leaves_the_previous_checkpoint_newest(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer("sgd")
    ckpt.save_checkpoint(tmp_path, 5, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 5})
    # weights renamed, JSON not yet (or still a temporary): no new checkpoint
    (tmp_path / "ckpt-00000010.safetensors").write_bytes(b"x" * 100)
    (tmp_path / ".ckpt-00000010.json.tmp-123").write_text("{")
    (tmp_path / ".best.json.tmp-9").write_text("{")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000005.json"
    # a JSON whose weights are shorter than recorded (not ours: we rename whole files) is skipped
    meta = json.loads((tmp_path / "ckpt-00000005.json").read_text())
    (tmp_path / "ckpt-00000007.json").write_text(json.dumps({**meta, "weights": "ckpt-00000010.safetensors"}))
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000005.json"
    (tmp_path / "ckpt-00000007.json").unlink()
    assert ckpt.clean_partial(tmp_path) == [
        ".best.json.tmp-9",
        ".ckpt-00000010.json.tmp-123",
        "ckpt-00000010.safetensors",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000005.json", "ckpt-00000005.safetensors"]


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer("sgd")
    ckpt.save_checkpoint(tmp_path, 1, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 1})
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    with pytest.raises(ckpt.NonFiniteWeightsError, match="step 2: weight .* NaN or infinity"):
        ckpt.save_checkpoint(
            tmp_path, 2, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 2}, keep_last=1
        )
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000001.json"]


def test_best_json_is_resynced_from_the_newest_checkpoint(tmp_path: Path) -> None:
    # A kill after a best checkpoint's JSON but before best.json: the checkpoint's own record wins,
    # and the next save rewrites best.json.
    model, opt = _model_and_optimizer("sgd")
    old = {"metric": "acc", "value": 0.1, "checkpoint": "ckpt-00000001.json"}
    ckpt.save_checkpoint(
        tmp_path, 1, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 1, "best": old}, best=True
    )
    new = {**old, "value": 0.2, "checkpoint": "ckpt-00000002.json"}
    ckpt.save_checkpoint(
        tmp_path, 2, model, opt, {"config": {}, "epoch": 1, "step_in_epoch": 1, "best": new}, best=True
    )
    (tmp_path / "best.json").write_text(json.dumps(old))  # as if the kill came before its rename
    assert ckpt.best_checkpoint(tmp_path) == tmp_path / "ckpt-00000002.json"
    ckpt.save_checkpoint(tmp_path, 3, model, opt, {"config": {}, "epoch": 2, "step_in_epoch": 1, "best": new})
    assert json.loads((tmp_path / "best.json").read_text())["checkpoint"] == "ckpt-00000002.json"


def test_restore_rejects_other_architecture(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer("sgd")
    ckpt.save_checkpoint(tmp_path, 1, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 1})
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="features.0.0.weight"):
        ckpt.restore(tensors, meta, get_model("digits_cnn", width=8))


def test_best_checkpoint_is_kept_beside_the_last_ones(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer("sgd")
    best = {"metric": "map", "value": 0.5, "higher_is_better": True, "epoch": 1, "step": 5}
    ckpt.save_checkpoint(
        tmp_path, 5, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 5, "best": best}, 2, best=True
    )
    for step in (10, 15, 20):  # worse ones: best.json still names step 5
        ckpt.save_checkpoint(
            tmp_path, step, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": step, "best": best}, 2
        )
    names = sorted(p.name for p in tmp_path.glob("ckpt-*.json"))
    assert names == ["ckpt-00000005.json", "ckpt-00000015.json", "ckpt-00000020.json"]  # 2 last + best
    assert (tmp_path / "ckpt-00000005.safetensors").is_file()
    assert ckpt.best_checkpoint(tmp_path) == tmp_path / "ckpt-00000005.json"
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000020.json"  # resume / eval: the last
    assert ckpt.resolve_checkpoint(tmp_path, best=True) == tmp_path / "ckpt-00000005.json"
    assert ckpt.resolve_checkpoint(tmp_path / "best.json") == tmp_path / "ckpt-00000005.json"
    record = json.loads((tmp_path / "best.json").read_text())
    assert record["checkpoint"] == "ckpt-00000005.json" and record["value"] == 0.5
    # A new best moves the pointer; the old best is then an ordinary old checkpoint: deleted.
    new = {**best, "value": 0.7, "step": 25}
    ckpt.save_checkpoint(
        tmp_path, 25, model, opt, {"config": {}, "epoch": 1, "step_in_epoch": 0, "best": new}, 2, best=True
    )
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.json")) == [
        "ckpt-00000020.json",
        "ckpt-00000025.json",
    ]
    assert ckpt.best_checkpoint(tmp_path) == tmp_path / "ckpt-00000025.json"


def test_resolve_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no best checkpoint"):
        ckpt.resolve_checkpoint(tmp_path, best=True)
    with pytest.raises(ValueError, match="no such checkpoint file or run directory"):
        ckpt.resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "best.json").write_text('{"checkpoint": "ckpt-00000009.json"}')  # names a deleted one
    with pytest.raises(ValueError, match="names no existing checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "best.json")


@pytest.mark.parametrize(
    ("value", "best", "higher", "expected"),
    [
        (0.5, None, True, True),
        (float("nan"), None, True, False),
        (-1.0, None, True, False),  # COCO's "no ground truth"
        (0.4, {"value": 0.5}, True, False),
        (0.5, {"value": 0.5}, True, False),  # a tie keeps the earlier one
        (0.6, {"value": 0.5}, True, True),
        (1.2, {"value": 1.5}, False, True),  # EPE: lower is better
        (1.7, {"value": 1.5}, False, False),
    ],
)
def test_better(value: float, best: dict | None, higher: bool, expected: bool) -> None:
    assert ckpt.better(value, best, higher) is expected


def test_optimizer_state_of_another_optimizer_is_refused(tmp_path: Path) -> None:
    model, adamw = _model_and_optimizer("adamw")
    ckpt.save_checkpoint(tmp_path, 1, model, adamw, {"config": {}, "epoch": 0, "step_in_epoch": 1})
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="not a SGD state"):
        ckpt.restore_optimizer(tensors, meta, sgd)
    assert sgd.state_dict()["state"] == {}  # unchanged


def test_a_second_save_of_one_step_never_breaks_the_committed_pair(tmp_path: Path) -> None:
    # Saving step 4 again with other tensors writes them under another name, so a kill before the
    # new JSON lands leaves the old JSON with its own weights (not with bytes of another sha).
    model, opt = _model_and_optimizer("sgd")
    ckpt.save_checkpoint(tmp_path, 4, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 4})
    before = ckpt.model_state(ckpt.load_checkpoint(tmp_path)[0])
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    real = ckpt._atomic_write

    def die_at_the_json(path: Path, data: bytes) -> None:
        if path.suffix == ".json":
            raise KeyboardInterrupt  # stands for the kill
        real(path, data)

    ckpt._atomic_write = die_at_the_json
    try:
        with pytest.raises(KeyboardInterrupt):
            ckpt.save_checkpoint(tmp_path, 4, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 4})
    finally:
        ckpt._atomic_write = real
    names = sorted(p.name for p in tmp_path.glob("ckpt-*"))
    assert len(names) == 3 and "ckpt-00000004.json" in names  # + the old and the new weights
    after = ckpt.model_state(ckpt.load_checkpoint(tmp_path)[0])  # checksum holds: the old pair
    assert all(torch.equal(before[k], after[k]) for k in before)
    path = ckpt.save_checkpoint(tmp_path, 4, model, opt, {"config": {}, "epoch": 0, "step_in_epoch": 4})
    assert json.loads(path.read_text())["weights"] != "ckpt-00000004.safetensors"
    assert len(list(tmp_path.glob("ckpt-*"))) == 2  # the superseded weights were removed
