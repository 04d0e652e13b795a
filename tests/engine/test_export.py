"""structpred.engine.export below the CLI: our custom operators in ONNX (NMS -> NonMaxSuppression,
RoIPool -> MaxRoiPool) against their eager kernels, empty inputs included; batched predictions
under torch.export; the inputs a file is checked on; refusals of --out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from structpred.engine import export as ex
from structpred.heads.items import BatchedItems, split_items
from structpred.ops import batched_nms, nms
from structpred.ops.roi_pool import roi_pool


def _boxes(n: int, g: torch.Generator) -> Tensor:
    xy = torch.rand(n, 2, generator=g) * 60
    return torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * 30], 1)  # (n, 4) xyxy


class _NMS(nn.Module):
    def forward(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return nms(boxes, scores, 0.5), batched_nms(boxes, scores, labels, 0.4)


class _RoIPool(nn.Module):
    def forward(self, x: Tensor, rois: Tensor) -> Tensor:
        return roi_pool(x, rois, 7, 0.25)


def _onnx(module: nn.Module, args: tuple[Tensor, ...], tmp_path: Path) -> object:
    dims = tuple({0: torch.export.Dim.AUTO(max=4096)} if a.dim() < 4 else {} for a in args)
    program = torch.export.export(module, args, dynamic_shapes=dims, strict=False)
    onnx_program = torch.onnx.export(
        program, args, custom_translation_table=ex.ONNX_TRANSLATIONS, opset_version=ex.OPSET, dynamo=True
    )
    assert onnx_program is not None
    onnx_program.save(str(tmp_path / "m.onnx"))
    return ex.onnx_session(tmp_path / "m.onnx")


@pytest.mark.slow  # two ONNX exports, ~5 s
def test_custom_ops_in_onnxruntime_equal_eager(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    boxes, scores, labels = (
        _boxes(80, g),
        torch.rand(80, generator=g),
        torch.randint(0, 3, (80,), generator=g),
    )
    session = _onnx(_NMS(), (boxes, scores, labels), tmp_path)
    for n in (80, 200, 1, 0):  # other sizes than traced, one box, none
        b, s, lab = _boxes(n, g), torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g)
        got = ex.run_onnx(session, (b, s, lab))
        want = _NMS()(b, s, lab)
        for w, o in zip(want, got, strict=True):
            assert torch.equal(w, o), (n, w, o)

    x = torch.randn(2, 8, 20, 24, generator=g)

    def rois(n: int) -> Tensor:
        return torch.cat([torch.randint(0, 2, (n, 1), generator=g).float(), _boxes(n, g) * 1.5], 1)

    session = _onnx(_RoIPool(), (x, rois(30)), tmp_path)
    for n in (30, 5, 0):
        r = rois(n)
        (got,) = ex.run_onnx(session, (x, r))
        torch.testing.assert_close(got, _RoIPool()(x, r), atol=0, rtol=0)


def test_split_items_keeps_the_batch_symbolic_only_when_exporting() -> None:
    batched = {"class_logits": torch.randn(3, 5), "labels": torch.tensor([1, 0, 4])}
    items = split_items(batched)
    assert not isinstance(items, BatchedItems) and len(items) == 3
    assert torch.equal(items[2]["class_logits"], batched["class_logits"][2]) and int(items[2]["labels"]) == 4

    class Wrap(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            out = split_items({"v": x * 2})
            assert isinstance(out, BatchedItems)  # no per-item split: B stays symbolic
            return out.batched["v"]

    program = torch.export.export(Wrap(), (torch.randn(4, 2),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    assert program.module()(torch.randn(7, 2)).shape == (7, 2)


def test_check_inputs_change_every_dynamic_axis() -> None:
    torch.manual_seed(0)
    from structpred.models import get_model

    spec = ex.export_spec("digits_cnn", get_model("digits_cnn", width=4))
    first, second = ex.check_inputs(spec)
    assert spec.dynamic == ({0: "batch", 2: "height", 3: "width"},)
    (a,), (b,) = first, second
    assert b.shape[0] == 3 and b.shape[2] == a.shape[2] * 3 // 2 and b.shape[3] == a.shape[3] * 3 // 4
    with pytest.raises(ValueError, match="image-size"):
        ex.export_spec("digits_cnn", get_model("digits_cnn", width=4), (4, 4))


def test_out_refusals_come_before_any_work(tmp_path: Path) -> None:
    existing = tmp_path / "m.onnx"
    existing.write_text("x")
    with pytest.raises(ValueError, match="exists; pass --force"):
        ex.export_model(existing, model_name="digits_cnn")
    with pytest.raises(ValueError, match="is a folder"):
        ex.export_model(tmp_path, model_name="digits_cnn")
    with pytest.raises(ValueError, match="not one of onnx, torch-export"):
        ex.export_model(tmp_path / "n.onnx", "tflite", model_name="digits_cnn")
    with pytest.raises(ValueError, match="exactly one of"):
        ex.export_model(tmp_path / "n.onnx", checkpoint=tmp_path, model_name="digits_cnn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # nothing written
