"""YOLO v1 (Redmon et al. 2016): the paper's network, the narrow variant, the detection contract,
the grid rule, bad input and a seeded overfit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structpred.data.shapes import ShapesWorld
from structpred.heads.yolo_v1 import LOSS_KEYS, cell_of
from structpred.models import get_model
from structpred.models.registry import parameter_count
from structpred.models.yolo_v1 import PAPER_LAYERS, YOLOv1
from structpred.ops import box_iou


def _tiny(**kw: object) -> YOLOv1:
    torch.manual_seed(0)
    model = get_model("yolo_v1_narrow", num_classes=3, hidden=32, width_div=4, **kw)
    assert isinstance(model, YOLOv1)
    return model


def test_paper_network_builds_on_meta_with_its_7x7x30_output() -> None:
    with torch.device("meta"):  # 271.7 M parameters, none allocated
        model = get_model("yolo_v1")
    # The conv stack's 448 -> 7 (stride 64) and the 7x7x30 output, run for real at 1/64 of the widths.
    thin = get_model("yolo_v1", width_div=64, hidden=8)
    features = thin.backbone(torch.rand(2, 3, 448, 448))
    assert features.shape == (2, 16, 7, 7) and thin.backbone.stride == 64
    assert thin.head(features).shape == (2, 7, 7, 30)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 24 and len(fcs) == 2
    assert [c.out_channels for c in convs][-4:] == [1024] * 4
    assert (fcs[0].in_features, fcs[0].out_features, fcs[1].out_features) == (7 * 7 * 1024, 4096, 1470)
    assert {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}
    assert model.head.dropout.p == 0.5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # v1 has none
    # Parameters: every conv (k*k*in*out + out) and both FCs, from the paper's table.
    expected, channels = 0, 3
    for layer in PAPER_LAYERS:
        if layer != "M":
            k, width, _ = layer  # type: ignore[misc]
            expected += k * k * channels * width + width
            channels = width
    expected += 7 * 7 * 1024 * 4096 + 4096 + 4096 * 1470 + 1470
    assert parameter_count("yolo_v1") == expected == 271_703_550


def test_narrow_trains_with_the_papers_dropout_after_the_first_fc() -> None:
    model = get_model("yolo_v1_narrow", hidden=32, width_div=4)  # the default: the paper's 0.5
    assert model.head.dropout.p == 0.5 and get_model("yolo_v1_narrow", dropout=0.2).head.dropout.p == 0.2
    features = torch.rand(2, 16, 8, 8)
    torch.manual_seed(0)
    model.head.train()
    a, b = model.head(features), model.head(features)
    assert not torch.equal(a, b)  # units dropped at random in training
    model.head.eval()
    assert torch.equal(model.head(features), model.head(features))  # and never in evaluation
    with pytest.raises(ValueError, match="dropout"):
        get_model("yolo_v1_narrow", dropout=1.5)


def test_conv_head_ablation_puts_each_cells_values_at_its_row_and_column() -> None:
    model = get_model("yolo_v1_narrow", head="conv", hidden=8, width_div=4, num_classes=3).eval()
    features = torch.rand(2, 16, 8, 8)
    out = model.head(features)  # (N, S, S, B*5 + C)
    direct = model.head.cell_predictor(model.head.act(model.head.conv(features)))  # (N, D, S, S)
    assert out.shape == (2, 8, 8, 13) and torch.equal(out[1, 2, 5], direct[1, :, 2, 5])  # row 2, column 5
    _, losses = model.train()([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[4.0, 4, 30, 20]]),
                                                          "labels": torch.tensor([2])}])  # fmt: skip
    assert set(losses) == set(LOSS_KEYS)
    with pytest.raises(ValueError, match="head must be 'fc' or 'conv'.*here 4 vs 8"):
        get_model("yolo_v1_narrow", head="conv", input_size=128)  # a 4 x 4 map for an 8 x 8 grid
    with pytest.raises(ValueError, match="got 'mlp'"):
        get_model("yolo_v1_narrow", head="mlp")


def test_grid_that_does_not_divide_the_input_is_refused() -> None:
    with pytest.raises(ValueError, match="grid_size 7 does not divide input_size 256"):
        get_model("yolo_v1_narrow", grid_size=7)
    with pytest.raises(ValueError, match="multiple of the backbone's stride 32"):
        get_model("yolo_v1_narrow", input_size=272, grid_size=8)
    with pytest.raises(ValueError, match="unknown YOLO v1 settings"):
        get_model("yolo_v1_narrow", min_size=300)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("yolo_v1_narrow", num_classes=0)
    model = get_model("yolo_v1_narrow", input_size=128, grid_size=4, hidden=16)  # 4 x 4 grid, 32 px cells
    assert model.head(model.backbone(torch.rand(1, 3, 128, 128))).shape == (1, 4, 4, 16)


def test_contract_train_and_eval_and_boxes_in_original_pixels() -> None:
    model = _tiny()
    images = [torch.rand(3, 60, 100), torch.rand(3, 90, 40)]
    targets = [
        {"boxes": torch.tensor([[10.0, 5.0, 50.0, 40.0]]), "labels": torch.tensor([2])},
        {
            "boxes": torch.tensor([[1.0, 2.0, 30.0, 80.0], [5.0, 5.0, 9.0, 9.0]]),
            "labels": torch.tensor([1, 3]),
        },
    ]
    for train in (True, False):
        model.train(train)
        preds, losses = model(images, targets)
        assert set(losses) == set(LOSS_KEYS) and all(torch.isfinite(v) for v in losses.values())
        assert preds is not None and len(preds) == 2
        none, again = model(images, targets, predict=False)
        assert none is None and set(again) == set(LOSS_KEYS)
    preds, no_losses = model(images)
    assert no_losses == {}
    with pytest.raises(ValueError, match="asks for neither"):
        model(images, predict=False)
    # A hand-set output: one box, centre of cell (row 2, col 5) of 8, 1/4 x 1/2 of the input.
    S, D = 8, 2 * 5 + 3
    bias = torch.full((S, S, D), -1.0)
    bias[2, 5, :5] = torch.tensor([0.5, 0.5, 0.5, 0.5**0.5, 1.0])  # x, y, sqrt w, sqrt h, confidence
    bias[2, 5, 10:] = torch.tensor([0.0, 0.9, 0.0])  # class 2
    with torch.no_grad():
        model.head.cell_predictor.weight.zero_()
        model.head.cell_predictor.bias.copy_(bias.flatten())
    model.eval()
    preds, _ = model(images)
    for pred, (H, W) in zip(preds, [(60, 100), (90, 40)], strict=True):
        # Centre (5.5 / 8, 2.5 / 8) of the image, size (1/4, 1/2): the warp undone per axis.
        cx, cy = 5.5 / 8 * W, 2.5 / 8 * H
        expected = torch.tensor([[cx - W / 8, cy - H / 4, cx + W / 8, cy + H / 4]])
        torch.testing.assert_close(pred["boxes"], expected)
        assert pred["labels"].tolist() == [2] and pred["scores"].tolist() == pytest.approx([0.9])
    # A batched tensor works as a list of its images.
    batch = torch.rand(2, 3, 64, 64)
    a, _ = model(batch)
    b, _ = model(list(batch.unbind(0)))
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p["boxes"], q["boxes"])


def test_bad_targets_are_named_and_images_without_objects_train() -> None:
    model = _tiny().train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    good = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 30.0]]), "labels": torch.tensor([1])}
    bad = [
        ({"boxes": torch.tensor([[10.0, 10.0, 10.0, 20.0]]), "labels": torch.tensor([1])}, "degenerate"),
        ({"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([4])}, r"in 1\.\.3"),
        ({"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([0])}, r"in 1\.\.3"),
        ({"boxes": torch.tensor([[70.0, 1.0, 90.0, 5.0]]), "labels": torch.tensor([1])}, "outside"),
        ({"boxes": torch.tensor([1.0, 1.0, 5.0, 5.0]), "labels": torch.tensor([1])}, r"Tensor\[N, 4\]"),
    ]
    for target, match in bad:
        with pytest.raises(ValueError, match=match):
            model(images, [good, target])
    with pytest.raises(ValueError, match="1 targets for 2 images"):
        model(images, [good])
    with pytest.raises(ValueError, match=r"Tensor\[3, H, W\]"):
        model([torch.rand(1, 64, 64)])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = model(images, [empty, empty], predict=False)
    zeros = [float(losses[k].detach()) for k in ("loss_box", "loss_class", "loss_object")]
    assert zeros == [0.0, 0.0, 0.0]
    total = sum(losses.values())
    assert float(total) > 0
    total.backward()  # type: ignore[union-attr]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
def test_seeded_overfit_finds_the_boxes() -> None:
    torch.manual_seed(0)
    data = ShapesWorld("train", num_images=2)
    samples = [data[i] for i in range(2)]
    images = [im for im, _ in samples]
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in samples]
    model = get_model("yolo_v1_narrow", input_size=128, hidden=64, width_div=4, dropout=0.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = last = 0.0
    for step in range(60):
        _, losses = model(images, targets, predict=False)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        first = float(loss.detach()) if step == 0 else first
        last = float(loss.detach())
    assert last < 0.05 * first, (first, last)
    model.eval()
    with torch.no_grad():
        preds, _ = model(images)
    for pred, target in zip(preds, targets, strict=True):
        # Every object whose centre has its own cell is found with its class at IoU >= 0.5.
        iou = box_iou(target["boxes"], pred["boxes"])  # (M, K)
        same = target["labels"][:, None] == pred["labels"][None, :]
        found = ((iou >= 0.5) & same & (pred["scores"][None, :] >= 0.3)).any(1)
        row, col = cell_of(target["boxes"] / 128, 8)
        cell = row * 8 + col
        owns = ~torch.tril(cell[:, None] == cell[None, :], diagonal=-1).any(1)  # first of its cell
        assert int(owns.sum()) >= 2 and bool(found[owns].all()), (target, pred)
