"""The strict renamer (``copy_renamed``) on small hand-made modules, and the ``from_torchvision``
dispatcher's refusals. Real torchvision models go through it in ``tests/parity``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import structpred.models.weights as weights_pkg
from structpred.models import from_torchvision
from structpred.models.weights import copy_renamed, rename_all


class FrozenBN(nn.Module):
    """Batch norm statistics as buffers and no ``num_batches_tracked`` counter."""

    def __init__(self, c: int) -> None:
        super().__init__()
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.register_buffer(name, torch.zeros(c))


class Source(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
        self.head = nn.Linear(2, classes)


class Target(nn.Module):
    def __init__(self, classes: int = 3, norm: type[nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 1), norm(2))
        self.classifier = nn.Linear(2, classes)


RULES = [(r"(body\..+)", r"\1"), (r"head\.(.+)", r"classifier.\1")]


def _random_(module: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g))
    return module


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------- the renamer


def test_identity_rule_and_rename_copy_every_tensor() -> None:
    src, dst = _random_(Source()), Target()
    mapping = copy_renamed(dst, src, RULES)
    assert mapping["body.0.weight"] == "body.0.weight"
    assert mapping["head.bias"] == "classifier.bias"
    assert set(mapping.values()) == set(dst.state_dict())
    for s, d in mapping.items():
        torch.testing.assert_close(dst.state_dict()[d], src.state_dict()[s], rtol=0, atol=0)


def test_no_implicit_identity_unmatched_source_is_named() -> None:
    with pytest.raises(ValueError, match=r"match no rename rule.*'body\.0\.weight'"):
        copy_renamed(Target(), Source(), RULES[1:])


def test_pattern_must_match_the_whole_name() -> None:
    # A bare prefix does not match: the rule has to say what follows it.
    with pytest.raises(ValueError, match=r"'head\.weight'"):
        rename_all(["head.weight"], [(r"head\.", "classifier.")])
    mapping = rename_all(["head.weight"], [(r"head\.(.+)", r"classifier.\1")])
    assert mapping == {"head.weight": "classifier.weight"}


def test_first_matching_rule_wins() -> None:
    rules = [(r"head\.weight", "first.weight"), (r"head\.(.+)", r"second.\1")]
    assert rename_all(["head.weight", "head.bias"], rules) == {
        "head.weight": "first.weight",
        "head.bias": "second.bias",
    }


def test_declared_skip_drops_only_what_it_names() -> None:
    src, dst = _random_(Source()), Target(norm=FrozenBN)
    # Without the skip, the source's BN counter has nowhere to go.
    with pytest.raises(ValueError, match=r"'body\.1\.num_batches_tracked'"):
        copy_renamed(dst, src, RULES)
    mapping = copy_renamed(dst, src, RULES, skip=[r".*\.num_batches_tracked"])
    assert "body.1.num_batches_tracked" not in mapping
    torch.testing.assert_close(dst.body[1].running_var, src.body[1].running_var)


def test_two_sources_onto_one_target_is_an_error() -> None:
    src = Source()
    src.extra = nn.Linear(2, 3)
    rules = [*RULES, (r"extra\.(.+)", r"classifier.\1")]
    with pytest.raises(ValueError, match=r"'classifier\.weight' <- \['head\.weight', 'extra\.weight'\]"):
        copy_renamed(Target(), src, rules)


def test_target_left_unfilled_is_an_error() -> None:
    dst = Target()
    dst.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"filled by no source tensor: 'extra\.bias', 'extra\.weight'"):
        copy_renamed(dst, Source(), RULES)


def test_renamed_to_no_tensor_of_ours_is_an_error() -> None:
    rules = [RULES[0], (r"head\.(.+)", r"clasifier.\1")]  # a typo in the rule
    with pytest.raises(ValueError, match=r"'head\.weight' -> 'clasifier\.weight'"):
        copy_renamed(Target(), Source(), rules)


def test_shape_mismatch_names_tensor_and_shapes_and_copies_nothing() -> None:
    dst = Target(classes=4)
    before = _snapshot(dst)
    expected = r"shape mismatch.*'head\.weight' \(3, 2\) -> 'classifier\.weight' \(4, 2\)"
    with pytest.raises(ValueError, match=expected):
        copy_renamed(dst, _random_(Source(classes=3)), RULES)
    for name, value in dst.state_dict().items():  # a failed conversion leaves ours untouched
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_reinit_keeps_ours_only_where_named_and_shapes_differ() -> None:
    src, dst = _random_(Source(classes=3)), Target(classes=4)
    fresh = _snapshot(dst)
    mapping = copy_renamed(dst, src, RULES, reinit=[r"classifier\..+"])
    assert set(mapping) == {n for n in src.state_dict() if not n.startswith("head.")}  # copied only
    for name, value in dst.state_dict().items():
        source = src.state_dict()[name] if name.startswith("body.") else fresh[name]
        torch.testing.assert_close(value, source, rtol=0, atol=0)
    # Equal shapes: a reinit tensor is copied like the rest.
    same = Target(classes=3)
    assert len(copy_renamed(same, src, RULES, reinit=[r"classifier\..+"])) == len(src.state_dict())
    torch.testing.assert_close(
        same.state_dict()["classifier.weight"], src.state_dict()["head.weight"], rtol=0, atol=0
    )
    # A mismatch outside the reinit patterns is still an error.
    with pytest.raises(ValueError, match=r"shape mismatch.*'head\.weight' \(3, 2\)"):
        copy_renamed(Target(classes=4), src, RULES, reinit=[r"body\..+"])


def test_requires_grad_is_copied_from_source_parameters() -> None:
    src, dst = Source(), Target()
    src.body[0].weight.requires_grad_(False)
    dst.classifier.bias.requires_grad_(False)
    copy_renamed(dst, src, RULES)
    assert not dst.body[0].weight.requires_grad
    assert dst.classifier.bias.requires_grad and dst.body[0].bias.requires_grad


def test_plain_state_dict_source_leaves_requires_grad_alone() -> None:
    src, dst = _random_(Source()), Target()
    dst.body[0].weight.requires_grad_(False)
    copy_renamed(dst, src.state_dict(), RULES)
    assert not dst.body[0].weight.requires_grad
    torch.testing.assert_close(dst.classifier.weight, src.head.weight)


# ---------------------------------------------------------------------------- the dispatcher


def test_unrecognised_model_gets_one_clear_error_listing_what_is_supported() -> None:
    with pytest.raises(ValueError, match="Linear is not a torchvision .* Supported: .*Faster R-CNN") as info:
        from_torchvision(nn.Linear(2, 2))
    for family in ("Mask R-CNN", "FCN", "DeepLabV3"):
        assert family in str(info.value)


def test_recognised_family_with_unsupported_variant_gets_the_converters_error() -> None:
    fake = nn.Module()
    fake.backbone = nn.Sequential(nn.Conv2d(3, 8, 3))  # no layer1..layer4
    # FCN's head: conv, BN, ReLU, dropout, 1x1 conv
    fake.classifier = nn.Sequential(
        nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(), nn.Conv2d(8, 2, 1)
    )
    fake.aux_classifier = None
    with pytest.raises(ValueError, match="not a ResNet"):
        from_torchvision(fake)


def test_no_module_of_the_package_imports_torchvision() -> None:
    for path in Path(weights_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "torchvision" for n in names), f"{path.name}: {names}"


def test_dispatch_does_not_load_torchvision() -> None:
    code = (
        "import sys\n"
        "from torch import nn\n"
        "from structpred.models import from_torchvision\n"
        "before = 'torchvision' in sys.modules\n"
        "try:\n"
        "    from_torchvision(nn.Sequential(nn.Linear(2, 2)))\n"
        "except ValueError:\n"
        "    pass\n"
        "print(before, 'torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.split()
    assert before == "False", "importing structpred.models loads torchvision: the check below is void"
    assert after == "False", "recognising a plain module imported torchvision"
