"""The forward contract every model keeps (DESIGN.md §3), in one place.

``model(inputs, targets=None, *, predict=True) -> (predictions, losses)``:

* ``predictions``: the task's prediction structure (see :mod:`structpred.tasks`), computed the
  same way in train and eval mode (the mode only switches dropout, batch-norm statistics and
  the sizes a paper sets per phase, such as the RPN's top-n). ``None`` exactly when the caller
  passed ``predict=False``: the engine's training step asks for losses only and so skips
  inference-only work (detection post-processing, a CRF).
* ``losses``: ``{"loss_*": scalar}`` whenever ``targets`` are given, in either mode; ``{}``
  without targets.
"""

from __future__ import annotations


def check_request(has_targets: bool, predict: bool, where: str) -> None:
    """Raise a ``ValueError`` for a call that asks for nothing (no targets and ``predict=False``)."""
    if not predict and not has_targets:
        raise ValueError(f"{where}: predict=False without targets asks for neither predictions nor losses")
