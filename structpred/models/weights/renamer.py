"""The one strict renamer: copy a peer's tensors into ours by explicit ``(regex, replacement)`` rules.

Every converter (torchvision today, timm later) describes its name mapping as an ordered list of
rules and calls :func:`copy_renamed`, which checks, in this order, and raises a ``ValueError``
naming the tensors at the first check that fails:

1. every source tensor is either declared skipped (``skip``: regexes matched against the whole
   source name) or matched by a rule (``re.fullmatch``; the first matching rule wins). There is
   no implicit identity: a name kept as is needs its own rule, e.g. ``(r"(backbone\\..*)", r"\\1")``;
2. every renamed source lands on a tensor of ours (a ``state_dict`` key of the target);
3. no two sources land on the same tensor of ours;
4. every tensor of ours is filled;
5. every source tensor has the shape of the tensor it fills, except the tensors of ours named by
   ``reinit`` (the class-dependent layers when fine-tuning to another number of classes): those
   keep their own, freshly initialised values when the shapes differ.

Only then is anything copied, so a failed conversion leaves the target untouched. Parameters of
ours that are filled from a source *parameter* also take its ``requires_grad`` (the same layers
stay frozen); a source given as a plain state dict carries no such flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

Rule = tuple[str, str]  # (regex matched against the whole source name, replacement for match.expand)

_SHOWN = 12  # names listed in an error before "... and N more"


def _listing(items: Sequence[str], sep: str = ", ") -> str:
    shown = sep.join(items[:_SHOWN])
    more = len(items) - _SHOWN
    return f"{shown}, ... and {more} more" if more > 0 else shown


def rename_all(names: Iterable[str], rules: Sequence[Rule], skip: Sequence[str] = ()) -> dict[str, str]:
    """``{source name: our name}`` for every name not skipped; first matching rule wins.

    Args:
        names: the source tensors' names.
        rules: ordered ``(pattern, replacement)``; ``pattern`` must match the whole name
            (``re.fullmatch``), ``replacement`` may use its groups (``\\1``, ``\\g<name>``).
        skip: patterns (whole name) of source tensors deliberately left out.

    Raises:
        ValueError: naming every source tensor that no rule and no skip pattern matches.
    """
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    skipped = [re.compile(pattern) for pattern in skip]
    mapping: dict[str, str] = {}
    unmatched: list[str] = []
    for name in names:
        if any(s.fullmatch(name) for s in skipped):
            continue
        for pattern, repl in compiled:
            m = pattern.fullmatch(name)
            if m is not None:
                mapping[name] = m.expand(repl)
                break
        else:
            unmatched.append(name)
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} source tensor(s) match no rename rule and no skip pattern: "
            f"{_listing([repr(n) for n in unmatched])}"
        )
    return mapping


def copy_renamed(
    target: nn.Module,
    source: nn.Module | Mapping[str, Tensor],
    rules: Sequence[Rule],
    *,
    skip: Sequence[str] = (),
    reinit: Sequence[str] = (),
) -> dict[str, str]:
    """Fill every tensor of ``target`` from ``source`` by ``rules``; return ``{source: ours}`` for
    the tensors copied.

    Args:
        target: our module; its ``state_dict`` keys are the names to fill, each exactly once.
        source: the peer's module (its ``state_dict``; parameters pass on ``requires_grad``) or
            a plain state dict.
        rules: ordered ``(pattern, replacement)`` rules, see :func:`rename_all`.
        skip: patterns of source tensors deliberately not copied (e.g. ``r".*\\.num_batches_tracked"``
            when our frozen batch norm keeps no counter).
        reinit: patterns (whole name) of *our* tensors that keep their own values when the
            source's shape differs (left out of the returned mapping); with equal shapes they
            are copied like the rest.

    Raises:
        ValueError: a source tensor without a rule, renamed to a name that is not ours, two
            sources onto one of ours, one of ours left unfilled, or a shape mismatch (names and
            shapes in the message). Nothing is copied then.
    """
    theirs = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    mapping = rename_all(theirs, rules, skip)
    mine = target.state_dict()

    foreign = sorted(f"{src!r} -> {dst!r}" for src, dst in mapping.items() if dst not in mine)
    if foreign:
        raise ValueError(f"{len(foreign)} source tensor(s) renamed to no tensor of ours: {_listing(foreign)}")

    filled_by: dict[str, list[str]] = {}
    for src, dst in mapping.items():
        filled_by.setdefault(dst, []).append(src)
    clashes = sorted(f"{dst!r} <- {srcs}" for dst, srcs in filled_by.items() if len(srcs) > 1)
    if clashes:
        raise ValueError(f"several source tensors renamed onto one of ours: {_listing(clashes, '; ')}")

    unfilled = sorted(set(mine) - set(filled_by))
    if unfilled:
        shown = _listing([repr(n) for n in unfilled])
        raise ValueError(f"{len(unfilled)} tensor(s) of ours filled by no source tensor: {shown}")

    may_differ = [re.compile(pattern) for pattern in reinit]
    differ = {src for src, dst in mapping.items() if theirs[src].shape != mine[dst].shape}
    kept = {src for src in differ if any(p.fullmatch(mapping[src]) for p in may_differ)}
    mismatched = [
        f"{src!r} {tuple(theirs[src].shape)} -> {dst!r} {tuple(mine[dst].shape)}"
        for src, dst in mapping.items()
        if src in differ and src not in kept
    ]
    if mismatched:
        shown = _listing(mismatched, "; ")
        raise ValueError(f"{len(mismatched)} shape mismatch(es) (source -> ours): {shown}")

    mapping = {src: dst for src, dst in mapping.items() if src not in kept}
    with torch.no_grad():
        for src, dst in mapping.items():
            mine[dst].copy_(theirs[src])
    if isinstance(source, nn.Module):
        # The same layers stay frozen as in the source model.
        ours = dict(target.named_parameters())
        for src, p in source.named_parameters():
            if src in mapping and mapping[src] in ours:
                ours[mapping[src]].requires_grad_(p.requires_grad)
    return mapping
