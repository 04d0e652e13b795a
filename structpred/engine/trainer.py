"""One training engine for every structpred model.

The model contract (DESIGN.md §3, :mod:`structpred.models.contract`): ``model(inputs, targets,
predict=True) -> (predictions, losses)`` where ``losses`` maps ``loss_*`` names to scalars; the
engine sums them. Training steps ask for ``predict=False`` (losses only); evaluation gets both,
so validation loss comes with validation metrics. The metric comes from the model's task.

Resuming is exact: the data order of an epoch is a pure function of ``(seed, epoch)``, the
learning rate a pure function of the step, and a checkpoint holds weights, optimizer state
and every RNG state. A run killed mid-epoch and resumed from its last checkpoint skips the
batches it already did and ends with the same weights as a run never interrupted.

Under torchrun (:mod:`.distributed`) each process takes its block of every global batch,
trainable batch norms are synchronised for the run, and every process must read the same
checkpoint on resume (checked); docs/distributed.md says what equals one process exactly.

With ``config.ema`` (:mod:`.ema`) an average of the weights follows every optimizer step;
validation, the best checkpoint's choice and ``structpred eval`` use it; checkpoints hold both.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..data.checks import check_images
from ..data.collate import collate
from ..progress import Progress
from ..tasks.base import Headline, Metric, Task, evaluation_loop
from . import checkpoint as ckpt
from . import distributed
from .ema import ModelEMA
from .logs import RunLog, epoch_line
from .recipe import TrainConfig
from .schedule import lr_at

log = logging.getLogger(__name__)

QUIET = 2.0  # seconds between progress lines in a log file (a quick loop: start and end only)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (model initialisation, dropout...)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; training stopped before the optimizer step."""


def _to_device(images: Sequence[Tensor], targets: Sequence[dict[str, Any]], device: torch.device) -> tuple:
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets


class Trainer:
    """Fit and evaluate a model on datasets of ``(image, target)`` items.

    Args:
        model: follows the contract above.
        train_data, val_data: datasets (``val_data`` optional).
        config: the run's settings.
        out_dir: run directory (checkpoints, ``log.csv``, ``tensorboard/``).
        metric: builds a fresh metric for each evaluation (None: loss only).
        task: the model's task, whose evaluation loop runs (None: the default per-batch loop);
            its headline metric picks the best checkpoint (None: the validation loss).
        report: where the per-epoch line goes (default: this module's logger at INFO; the CLI
            prints it).
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        val_data: Dataset | None = None,
        config: TrainConfig | None = None,
        out_dir: str | Path = "runs/run",
        metric: Callable[[], Metric] | None = None,
        collate_fn: Callable[[list[Any]], tuple] = collate,
        task: Task | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.ctx = distributed.init(self.config.device)
        self.model = model.to(self.ctx.device)
        self.train_data = train_data
        self.val_data = val_data
        self.out_dir = Path(out_dir)
        self.metric = metric
        self.task = task
        self.collate_fn = collate_fn
        self.optimizer = self._build_optimizer()
        self.ema = ModelEMA.from_spec(self.model, self.config.ema)  # the unwrapped module's average
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.last_metric: Metric | None = None  # the last evaluation's (e.g. for PR curves)
        self.headline: Headline = task.headline if task is not None else Task.headline
        self.best: dict[str, Any] | None = None  # the best validation so far (see _is_best)
        self.report: Callable[[str], None] = report or log.info

    # ------------------------------------------------------------------ building blocks
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        # The fused kernels update every parameter in one pass: AdamW's step is ~4x faster on CPU.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
        # timm's convention: a model's no_weight_decay() names the parameters decay must not pull
        # to 0 (a multi-task loss weighting's log-variances and task weights)
        exempt = getattr(self.model, "no_weight_decay", None)
        names = set(exempt()) if callable(exempt) else set()
        groups: list[dict[str, Any]] = [{"params": [p for n, p in named if n not in names]}]
        if names:
            kept = [p for n, p in named if n in names]
            groups.append({"params": kept, "weight_decay": 0.0, "no_decay": True})
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, fused=fused
            )
        return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay, fused=fused)

    def _autocast(self) -> Any:
        amp = self.config.amp
        if amp is None:
            return nullcontext()
        if amp == "fp16" and self.ctx.device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA; use amp='bf16' on CPU")
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: full global batches (``world_size x batch_size`` items)."""
        n, world, b = len(self.train_data), self.ctx.world_size, self.config.batch_size  # type: ignore[arg-type]
        steps = n // (world * b)
        if steps == 0:
            raise ValueError(
                f"batch size {b} x {world} processes is larger than the training set ({n} items)"
            )
        return steps

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of ``epoch``: a pure function of (seed, epoch, rank); at each step
        the processes' batches together are one process's batch (see ``global_batches``)."""
        batches = distributed.global_batches(
            len(self.train_data),  # type: ignore[arg-type]
            self.config.batch_size,
            self.ctx.world_size,
            self.ctx.rank,
            self.config.seed,
            epoch,
        )
        assert len(batches) == self.steps_per_epoch()
        return batches

    def _loader(self, data: Dataset, batches: Iterable[list[int]], epoch: int) -> DataLoader:
        # Own generator: creating the iterator must not draw from the global RNG.
        return DataLoader(
            data,
            batch_sampler=list(batches),
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(self.config.seed + epoch),
        )

    def _save(
        self, epoch: int, step_in_epoch: int, metrics: dict[str, Any] | None = None, best: bool = False
    ) -> None:
        if not self.ctx.is_main:
            return
        state = {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "epochs_done": epoch + 1 if step_in_epoch >= self.steps_per_epoch() else epoch,
            "config": dataclasses.asdict(self.config),
            "metrics": metrics or {},
            "best": self.best,
        }
        ckpt.save_checkpoint(
            self.out_dir, self.step, self.model, self.optimizer, state, self.config.keep_last, best, self.ema
        )

    def _is_best(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record ``metrics`` as the best so far if their headline figure beats the best's."""
        key, higher, _ = self.headline
        if not ckpt.better(metrics.get(key), self.best, higher):
            return False
        self.best = {
            "metric": key,
            "value": metrics[key],
            "higher_is_better": higher,
            "epoch": epoch + 1,  # 1-based, as printed
            "step": self.step,
            "checkpoint": ckpt.checkpoint_name(self.step),
        }
        return True

    def _restore_optimizer(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """The checkpoint's optimizer state, or a fresh one (said) when it cannot apply."""
        was = str(meta.get("config", {}).get("optimizer", self.config.optimizer))
        if was != self.config.optimizer:
            self.report(f"optimizer changed ({was} -> {self.config.optimizer}): fresh optimizer state")
            return
        try:
            ckpt.restore_optimizer(tensors, meta, self.optimizer)
        except (ValueError, KeyError) as err:  # other trainable parameters (--freeze changed...)
            self.optimizer = self._build_optimizer()
            self.report(f"the checkpoint's optimizer state does not fit ({err}): fresh optimizer state")
            return
        c = self.config  # hyper-parameters are the config's, not the checkpoint's
        for group in self.optimizer.param_groups:
            group["weight_decay"] = 0.0 if group.get("no_decay") else c.weight_decay
            if "momentum" in group:
                group["momentum"] = c.momentum

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs``; with ``resume``, continue from the newest checkpoint.

        Returns:
            the last validation metrics (empty without ``val_data``).
        """
        c = self.config
        runlog = RunLog(self.out_dir, tensorboard=self.ctx.is_main) if self.ctx.is_main else None
        start_epoch, skip, rng_meta = 0, 0, None
        last_metrics: dict[str, Any] = {}
        if resume:
            start_epoch, skip, rng_meta = self._resume(runlog)
            if rng_meta is not None:
                last_metrics = dict(rng_meta[1].get("metrics") or {})
                if start_epoch >= c.epochs:
                    self.report(f"the run is complete ({c.epochs} epochs); nothing to train")
        train_model: nn.Module = self.model
        if self.ctx.distributed:
            # Batch statistics over the global batch, as one process computes them.
            synced = distributed.sync_batchnorm(self.model)
            if synced:
                log.info("%d batch norm layers synchronised across %d processes", synced, self.ctx.world_size)
            train_model = DistributedDataParallel(self.model)
        try:
            return self._fit(train_model, runlog, start_epoch, skip, rng_meta, last_metrics)
        finally:
            if self.ctx.distributed:
                distributed.local_batchnorm(self.model)  # the caller's model as it was given
            if runlog is not None:
                runlog.close()

    def _fit(
        self,
        train_model: nn.Module,
        runlog: RunLog | None,
        start_epoch: int,
        skip: int,
        rng_meta: tuple[dict[str, Tensor], dict[str, Any]] | None,
        last_metrics: dict[str, Any],
    ) -> dict[str, Any]:
        """The epochs of :meth:`fit` from ``start_epoch`` (its first ``skip`` batches done)."""
        c = self.config
        total = c.epochs * self.steps_per_epoch()
        for epoch in range(start_epoch, c.epochs):
            tic = time.perf_counter()
            batches = self._epoch_batches(epoch)
            set_epoch = getattr(self.train_data, "set_epoch", None)
            if callable(set_epoch):  # per-epoch draws (augmentation): a function of (seed, epoch, item)
                set_epoch(epoch)
            loader = self._loader(self.train_data, batches[skip:], epoch)
            if rng_meta is not None:  # exactly where the interrupted run stood
                ckpt.set_rng_state(rng_meta[0], rng_meta[1]["rng"])
                rng_meta = None
            train_loss = self._train_epoch(train_model, loader, epoch, skip, total, runlog)
            skip = 0
            due = (epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs
            last_metrics = self.evaluate() if due and self.val_data is not None and self.ctx.is_main else {}
            scalars = _scalars(last_metrics)
            if runlog is not None and last_metrics:
                runlog.write(self.step, epoch, "val", scalars)
            best = bool(scalars) and self._is_best(scalars, epoch)
            self.history.append({"epoch": epoch, "step": self.step, "train_loss": train_loss, **scalars})
            self._save(epoch, len(batches), scalars, best=best)
            if self.ctx.is_main:
                seconds = time.perf_counter() - tic
                self.report(
                    epoch_line(epoch, c.epochs, train_loss, scalars, self.headline.key, best, seconds)
                )
            distributed.barrier(self.ctx)
        return last_metrics

    def _resume(
        self, runlog: RunLog | None
    ) -> tuple[int, int, tuple[dict[str, Tensor], dict[str, Any]] | None]:
        """Restore the newest checkpoint; ``(epoch, batches of it done, (tensors, state))``."""
        found = ckpt.latest_checkpoint(self.out_dir)
        loaded = ckpt.load_checkpoint(found) if found is not None else None
        # Every process reads the checkpoint: all must find the same one (one shared folder).
        step = int(loaded[1]["step"]) if loaded is not None else -1
        if not distributed.all_equal(step, self.ctx):
            raise ValueError(
                f"--resume: rank {self.ctx.rank} found {found or 'no checkpoint'} in {self.out_dir}, "
                "another rank a different one; every node must see the same run folder (a shared disk)"
            )
        if loaded is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", self.out_dir)
            return 0, 0, None
        tensors, meta = loaded
        ckpt.restore(tensors, meta, self.model, None, rng=False)
        self._restore_optimizer(tensors, meta)
        if self.ema is not None and (note := self.ema.resume(tensors, meta)) is not None:
            self.report(note)
        self.best = meta.get("best")
        self.step, epoch, skip = int(meta["step"]), int(meta["epoch"]), int(meta["step_in_epoch"])
        if skip >= self.steps_per_epoch():  # saved at the epoch's end: the next one starts
            epoch, skip = epoch + 1, 0
        if runlog is not None:
            runlog.drop_after(self.step)
        log.info("resuming from %s (epoch %d, step %d)", found, epoch, self.step)
        return epoch, skip, (tensors, meta)

    def _train_epoch(
        self, model: nn.Module, loader: DataLoader, epoch: int, done: int, total: int, runlog: RunLog | None
    ) -> float:
        """One epoch's (remaining) steps; the mean training loss over them."""
        c = self.config
        loss_sum, steps = 0.0, 0
        model.train()
        bar: Progress[Any] = Progress(
            total=len(loader) + done,
            initial=done,
            desc=f"epoch {epoch + 1}/{c.epochs}",
            enabled=c.progress and self.ctx.is_main,
            min_interval=QUIET,
        )
        step_in_epoch = done
        for images, targets in loader:
            tic = time.perf_counter()
            lr = lr_at(self.step, c.lr, total, c.warmup_steps, c.schedule, c.milestones, c.gamma)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.ctx.distributed:  # the step's random draws: a function of (seed, step, rank)
                distributed.seed_step(c.seed, self.step, self.ctx.rank)
            self._check_inputs(images, f"epoch {epoch + 1} batch {step_in_epoch + 1}")
            images, targets = _to_device(images, targets, self.ctx.device)
            with self._autocast():
                _, losses = model(images, targets, predict=False)  # losses only: no inference work
            self._check_finite(losses)
            loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad_norm)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            step_in_epoch += 1
            ips = len(images) * self.ctx.world_size / max(time.perf_counter() - tic, 1e-9)
            values = {k: float(v.detach()) for k, v in losses.items()}
            values.update(loss=float(loss.detach()), lr=lr, images_per_s=ips)
            loss_sum, steps = loss_sum + values["loss"], steps + 1
            bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{ips:.1f}")
            bar.update(1)
            if runlog is not None and (self.step % c.log_every == 0 or step_in_epoch == 1):
                runlog.write(self.step, epoch, "train", values)
            last = step_in_epoch == done + len(loader)  # its checkpoint comes after validation
            if c.checkpoint_every and self.step % c.checkpoint_every == 0 and not last:
                self._save(epoch, step_in_epoch)
        bar.close()
        return loss_sum / max(steps, 1)

    def _check_inputs(self, inputs: Any, where: str) -> None:
        """Images, pairs and clips must be float in [0, 1] and finite (``data.checks``): float64,
        0..255 floats and NaN pixels otherwise train silently wrong. Sequences are not images."""
        if self.task is not None and self.task.inputs in ("image", "pair", "clip"):
            check_images(inputs, where)

    def _check_finite(self, losses: dict[str, Tensor]) -> None:
        if not losses:
            raise ValueError("the model returned no losses in training mode (expected loss_* terms)")
        for name, value in losses.items():
            if not name.startswith("loss_"):
                raise ValueError(f"loss names must start with 'loss_', got {name!r}")
            if not bool(torch.isfinite(value.detach()).all()):
                raise NonFiniteLossError(
                    f"step {self.step + 1}: loss term {name!r} is {value.detach().float().item()}; "
                    f"stopped before the optimizer step (last good checkpoint kept in {self.out_dir})"
                )

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, data: Dataset | None = None) -> dict[str, Any]:
        """Validation loss (mean of each ``loss_*`` term over items) and the metric, if any; of the
        weight EMA when the run keeps one."""
        data = data if data is not None else self.val_data
        if data is None:
            raise ValueError("no data to evaluate on")
        model = self.ema.module if self.ema is not None else self.model
        self.model.eval()
        metric = self.metric() if self.metric is not None else None
        indices = list(range(len(data)))  # type: ignore[arg-type]
        b = self.config.batch_size
        loader = self._loader(data, [indices[i : i + b] for i in range(0, len(indices), b)], 0)

        def run(inputs: Any, targets: Any) -> tuple[Any, dict[str, Tensor]]:
            self._check_inputs(inputs, "validation batch")
            inputs, targets = _to_device(inputs, targets, self.ctx.device)
            with self._autocast():
                return model(inputs, targets)

        loop = self.task.evaluate if self.task is not None else evaluation_loop  # the task's own loop
        shown = self.config.progress and self.ctx.is_main
        with Progress(loader, desc="validation", enabled=shown, min_interval=QUIET) as batches:
            sums, count = loop(run, batches, metric)
        self.model.train()
        out: dict[str, Any] = {k: v / max(count, 1) for k, v in sums.items()}
        if sums:
            out["loss"] = sum(out.values())
        if metric is not None:
            out.update(metric.compute())
        self.last_metric = metric
        return out


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict, as floats (for logs and checkpoints)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, Tensor) and v.numel() == 1:
            out[k] = float(v)
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out
