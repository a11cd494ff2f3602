"""The pretraining loop: one step reads top to bottom; parallelism, checkpoints and logs are delegated.

``pretrain(config)`` runs a whole job; :class:`Trainer` exposes the pieces (``train_step``,
``validate``, ``save``) for notebooks and tests.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import resource
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sigcell.data.batch import CellBatch
from sigcell.model.heads import MaskedExpressionModel
from sigcell.model.validate import check_batch
from sigcell.train import parallel
from sigcell.train.checkpoint import (
    find_checkpoint,
    newest_intact_checkpoint,
    write_checkpoint,
)
from sigcell.train.config import TrainConfig
from sigcell.train.data import TrainData, build_data, mix_seed
from sigcell.train.logger import MetricsLogger
from sigcell.train.masking import mask_batch
from sigcell.train.optim import build_optimizer, build_scheduler

__all__ = ["NonFiniteError", "TrainResult", "Trainer", "pretrain", "uses_compile"]

# Under torch.compile, attention statistics are recorded on every this-many-th step (an eager forward).
ATTN_STATS_EVERY_COMPILED = 50


# What torch.compile raises when its backend cannot compile a graph (torch._dynamo.exc / torch._inductor.exc;
# matched by name: importing torch._inductor to get the classes costs over a second).
COMPILER_ERROR_NAMES = frozenset({"BackendCompilerFailed", "InductorError"})


def is_compiler_error(err: BaseException) -> bool:
    """Whether ``err`` is torch.compile's backend failing (not an error of the model or its inputs)."""
    return any(cls.__name__ in COMPILER_ERROR_NAMES and cls.__module__.startswith("torch.")
               for cls in type(err).__mro__)


def uses_compile(setting: str, device: torch.device) -> bool:
    """Whether a run compiles its model: ``"on"``, ``"off"``, or ``"auto"`` = on CUDA devices only."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


class NonFiniteError(RuntimeError):
    """The loss or the gradient of a step is NaN or infinite."""

    def __init__(self, step: int, loss: float, grad_norm: float) -> None:
        self.step, self.loss, self.grad_norm = step, loss, grad_norm
        super().__init__(f"non-finite value at step {step}: loss {loss}, gradient norm {grad_norm}")


@dataclass
class TrainResult:
    """How a run ended.

    Attributes
    ----------
    status
        ``"completed"`` (all steps), ``"paused"`` (stopped early on request) or ``"nonfinite"``.
    step
        Optimizer steps done.
    checkpoint
        The newest checkpoint on disk (the last good one after a non-finite stop), or None.
    """

    status: str
    step: int
    out_dir: Path
    checkpoint: Path | None
    last_loss: float | None = None
    last_val_loss: float | None = None
    message: str = ""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    """Masked-expression pretraining of a :class:`~sigcell.model.MaskedExpressionModel`.

    Parameters
    ----------
    config
        The resolved run configuration.
    resume
        Continue from the newest checkpoint in ``config.out_dir`` (a fresh start if there is none).
    data
        Optional :class:`~sigcell.train.data.TrainData` (defaults to what ``config.data`` describes).
    callbacks
        Called as ``fn(trainer, step, metrics)`` after every logged step (on every rank).
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, data: TrainData | None = None,
                 callbacks: tuple[Callable[..., None], ...] = ()) -> None:
        self.config = config
        self.callbacks = callbacks
        self.dist = parallel.init_distributed(config.device)
        self.device = self.dist.device
        self.out_dir = Path(config.out_dir)
        ckpt, parts = self._resume_point() if resume else (None, None)
        has_run = parallel.broadcast_object(self._has_run() if self.dist.is_main else None)
        if not resume and has_run:
            msg = (f"{str(self.out_dir)!r} already holds a run (checkpoints or metrics.jsonl); pass --resume "
                   "to continue it or choose another --out")
            raise FileExistsError(msg)
        _seed_everything(config.seed)
        self.model = MaskedExpressionModel(config.model).to(self.device)
        self.wrapped = parallel.wrap_model(self.model, self.dist, config.parallel)
        self.compiled = uses_compile(config.compile, self.device)
        # The step runs the compiled module; attention statistics (host reads of lengths) and anything
        # else that would break the graph run the eager one.
        self.run_model = torch.compile(self.wrapped) if self.compiled else self.wrapped
        self.optimizer = build_optimizer(self.model, config.optim, self.device)
        self.scheduler = build_scheduler(self.optimizer, config.optim, config.steps)
        self.data = data if data is not None else build_data(config, self.dist)
        self.step = 0
        self.last_val_loss: float | None = None
        self.last_val_expression_loss: float | None = None
        # the newest checkpoint known intact: the one resumed from (checked above), then each one written
        self.last_checkpoint: Path | None = ckpt
        if ckpt is not None:
            self._load(ckpt, parts)
        self.logger = MetricsLogger(self.out_dir, config.steps, enabled=self.dist.is_main,
                                    tensorboard=config.tensorboard, progress=config.progress,
                                    start_step=self.step)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(config.to_yaml())
        n_all, n_core = self.model.num_parameters(), self.model.num_parameters(embeddings=False)
        self.logger.message(
            f"sigcell pretrain: {config.model.attention} attention, {n_all:,} parameters ({n_core:,} without "
            f"gene tables), {self.dist.world_size} process(es) on {self.device}, "
            + (f"resumed from {ckpt.name}" if ckpt is not None else "fresh start"))

    # ------------------------------------------------------------------------------------------------
    def _has_run(self) -> bool:
        return (self.out_dir / "metrics.jsonl").exists() or find_checkpoint(self.out_dir) is not None

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for ``precision`` bf16 (or auto on CUDA), else nothing."""
        precision = self.config.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _masked(self, batch: CellBatch, *keys: int) -> CellBatch:
        gen = torch.Generator().manual_seed(mix_seed(self.config.seed, *keys))
        masked = mask_batch(batch, self.config.data.mask_fraction, self.config.model.value_encoding, gen)
        check_batch(masked, self.config.model)  # value ranges, while the batch is still on the CPU
        return masked

    # ------------------------------------------------------------------------------------------------
    def _forward_backward(self, micro: list[CellBatch], weight: float, record_attn: bool):
        """Forward and backward of the step's micro-batches (gradients accumulate); returns the loss sum,
        the per-part loss sums and the attention statistics (of the first micro-batch, if recorded)."""
        loss_sum = torch.zeros((), device=self.device)
        part_sums: dict[str, torch.Tensor] = {}
        attn_stats: dict[str, float] = {}
        for i, batch in enumerate(micro):
            batch = batch.to(self.device, non_blocking=True)
            stats = record_attn and i == 0
            self.model.encoder.set_record_stats(stats)
            with parallel.gradient_sync(self.wrapped, sync=i == len(micro) - 1):
                with self.autocast:
                    out = (self.wrapped if stats else self.run_model)(batch)
                (out.loss_sum * weight).backward()
            if stats:
                attn_stats = self.model.encoder.attention_stats()
                self.model.encoder.set_record_stats(False)
            loss_sum += out.loss_sum.detach().float()
            for name, part in out.parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + part.detach().float()
        return loss_sum, part_sums, attn_stats

    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns the step's metrics.

        The loss is normalized by the number of masked tokens of the whole step (all micro-batches,
        all ranks), so every masked token weighs the same whatever the accumulation or world size.

        Raises
        ------
        NonFiniteError
            If the loss or the gradient norm is not finite (the optimizer step is skipped).
        """
        cfg, step = self.config, self.step
        start = time.perf_counter()
        record = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
        # Attention statistics need the eager model (host reads); compiled runs take them less often.
        record_attn = record and (not self.compiled or (step + 1) % ATTN_STATS_EVERY_COMPILED == 0
                                  or step + 1 == cfg.steps)
        # Masks are keyed by the global micro-batch index, so N ranks x accumulation A see the same masks
        # as one rank with accumulation N * A.
        world, rank = self.dist.world_size, self.dist.rank
        micro = [self._masked(next(self.data.train), (step * cfg.grad_accum + i) * world + rank)
                 for i in range(cfg.grad_accum)]
        local = torch.tensor([[float(b.mask.sum()), float(_tokens(b)), float(b.num_cells)] for b in micro],
                             dtype=torch.float64).sum(0)
        n_masked, n_tokens, n_cells = parallel.all_reduce_sum(local.to(self.device)).tolist()
        weight = self.dist.world_size / max(n_masked, 1.0)  # DDP averages gradients over ranks
        try:
            loss_sum, part_sums, attn_stats = self._forward_backward(micro, weight, record_attn)
        except Exception as err:
            if not is_compiler_error(err) or self.run_model is self.wrapped or self.dist.distributed:
                raise
            # The compiler failed on these shapes (an Inductor lowering, say): the step is redone without
            # it, from zeroed gradients, and so is the rest of the run: slower, never wrong.
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {first}); training continues without "
                          "compiling the model (slower; --compile off skips the attempt)", RuntimeWarning,
                          stacklevel=2)
            self.run_model, self.compiled = self.wrapped, False
            self.model.encoder.set_record_stats(False)
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, part_sums, attn_stats = self._forward_backward(micro, weight, record_attn)
        loss = float(parallel.all_reduce_sum(loss_sum)) / max(n_masked, 1.0)
        layer_norms = self._grad_norms() if record else {}
        clip = cfg.optim.clip_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else float("inf"))
        grad_norm = float(grad_norm.full_tensor() if parallel.is_sharded(grad_norm) else grad_norm)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(step + 1, loss, grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if not record:
            return {"loss": loss, "lr": lr}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        parts = {}
        if part_sums:  # each objective's share, normalized like the loss (all ranks)
            names = sorted(part_sums)
            summed = parallel.all_reduce_sum(torch.stack([part_sums[n] for n in names])).tolist()
            parts = {f"loss/{n}": v / max(n_masked, 1.0) for n, v in zip(names, summed, strict=True)}
        metrics = {"loss": loss, "lr": lr, "grad_norm": grad_norm, **parts, **layer_norms,
                   **{f"attn/{k}": v for k, v in attn_stats.items()},
                   "masked_tokens": n_masked, "tokens": n_tokens, "cells": n_cells, "step_time_s": elapsed,
                   "tokens_per_s": n_tokens / elapsed, "cells_per_s": n_cells / elapsed,
                   "peak_mem_mb": self._peak_memory_mb()}
        return metrics

    def _grad_norms(self) -> dict[str, float]:
        """Gradient norm per group: ``grad_norm/embed``, ``grad_norm/layer{i}``, ``grad_norm/head``."""
        groups: dict[str, list[torch.Tensor]] = {}
        for name, p in self.model.named_parameters():
            if p.grad is None:
                continue
            if name.startswith("encoder.blocks."):
                key = f"layer{name.split('.')[2]}"
            elif name.startswith("head.") or name.startswith("encoder.norm."):
                key = "head"
            else:
                key = "embed"
            groups.setdefault(key, []).append(parallel.local_part(p.grad))
        order = lambda k: (k != "embed", k == "head", int(k[5:]) if k[5:].isdigit() else 0)
        names = sorted(groups, key=order)
        sq = torch.stack([sum(g.float().pow(2).sum() for g in groups[k]) for k in names])
        if self.config.parallel == "fsdp" and self.dist.distributed:
            sq = parallel.all_reduce_sum(sq)  # shards: squares add up across ranks
        return {f"grad_norm/{k}": v for k, v in zip(names, sq.sqrt().tolist(), strict=True)}

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
            return peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)

    @torch.no_grad()
    def validate(self) -> float:
        """Mean masked-token loss over ``val_batches`` fixed held-out micro-batches (split over the ranks).

        The masked-expression share alone (comparable across cell objectives) is kept in
        ``last_val_expression_loss``.
        """
        self.wrapped.eval()
        total = torch.zeros(3, dtype=torch.float64, device=self.device)
        for index, raw in self.data.val_batches(self.config.val_batches):
            batch = self._masked(raw, 1 << 40, index).to(self.device)
            with self.autocast:
                out = self.wrapped(batch)
            expression = out.parts.get("expression", out.loss_sum)
            total += torch.stack([out.loss_sum.double(), expression.double(), out.n_masked.double()])
        self.wrapped.train()
        loss_sum, expression_sum, count = parallel.all_reduce_sum(total).tolist()
        self.last_val_loss = loss_sum / max(count, 1.0)
        self.last_val_expression_loss = expression_sum / max(count, 1.0)
        return self.last_val_loss

    def _resume_point(self) -> tuple[Path | None, tuple | None]:
        """The newest intact checkpoint and its contents; damaged newer ones are reported, never loaded."""
        ckpt, parts, skipped = newest_intact_checkpoint(self.out_dir)
        for line in skipped:
            warnings.warn(f"--resume: skipping damaged checkpoint {line}", UserWarning, stacklevel=3)
        if ckpt is None and skipped:
            msg = (f"cannot resume {str(self.out_dir)!r}: no intact checkpoint ({'; '.join(skipped)}); "
                   "start a fresh run in another --out")
            raise ValueError(msg)
        return ckpt, parts

    # ------------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Write a checkpoint of the current step (every rank must call; rank 0 writes)."""
        strategy = self.config.parallel
        weights = parallel.full_state_dict(self.model, strategy)
        optim_state = parallel.optimizer_state(self.model, self.optimizer, strategy)
        per_rank = parallel.all_gather_objects({"rng": _rng_state(), "data": self.data.state_dict()})
        path = None
        if self.dist.is_main:
            state = {"step": self.step, "optimizer": optim_state, "scheduler": self.scheduler.state_dict(),
                     "ranks": per_rank, "world_size": self.dist.world_size,
                     "last_val_loss": self.last_val_loss}
            path = write_checkpoint(self.out_dir, self.step, weights, state, self.config,
                                    vocab_path=self.data.vocab_path, keep=self.config.keep_checkpoints)
        parallel.barrier()
        return path

    def _load(self, ckpt: Path, parts: tuple) -> None:
        weights, state, saved = parts
        if saved.model != self.config.model:
            diff = {k: (v, getattr(self.config.model, k)) for k, v in saved.model.to_dict().items()
                    if getattr(self.config.model, k) != v}
            msg = (f"cannot resume from {ckpt}: its model config differs (checkpoint, requested): {diff}; "
                   "resume with the run's own config.yaml")
            raise ValueError(msg)
        strategy = self.config.parallel
        parallel.load_full_state_dict(self.model, weights, strategy)
        parallel.load_optimizer_state(self.model, self.optimizer, state["optimizer"], strategy)
        self.scheduler.load_state_dict(state["scheduler"])
        ranks = state["ranks"]
        if len(ranks) != self.dist.world_size:
            msg = (f"cannot resume exactly from {ckpt}: it was written by {len(ranks)} process(es), "
                   "this run has "
                   f"{self.dist.world_size}; resume with the same world size")
            raise ValueError(msg)
        mine = ranks[self.dist.rank]
        self.data.load_state_dict(mine["data"])
        _set_rng_state(mine["rng"])
        self.step = int(state["step"])
        self.last_val_loss = state.get("last_val_loss")
        if self.config.steps < self.step:
            msg = (f"cannot resume {ckpt} to {self.config.steps} steps: the run is already at step "
                   f"{self.step}; pass --steps above {self.step} to train further")
            raise ValueError(msg)

    # ------------------------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> TrainResult:
        """Train to ``config.steps`` (or stop after step ``until``, e.g. to simulate an interruption).

        Checkpoints every ``ckpt_every`` steps and at the end; validation every ``val_every`` steps.
        A non-finite loss or gradient stops the run without writing, keeping the last good checkpoint.
        """
        cfg = self.config
        end = cfg.steps if until is None else min(until, cfg.steps)
        last_ckpt = self.last_checkpoint
        metrics: dict[str, float] = {}
        self.wrapped.train()
        try:
            while self.step < end:
                try:
                    metrics = self.train_step()
                except NonFiniteError as err:
                    good = last_ckpt if last_ckpt is not None else "none (no checkpoint was written yet)"
                    text = (f"stopping: {err}. The optimizer step was skipped; the last good checkpoint is "
                            f"{good}")
                    self.logger.log(err.step, {"loss": err.loss, "grad_norm": err.grad_norm,
                                               "message": text}, kind="nonfinite")
                    self.logger.message(text)
                    return TrainResult("nonfinite", self.step, self.out_dir, last_ckpt, err.loss,
                                       self.last_val_loss, text)
                step = self.step
                if cfg.val_every and step % cfg.val_every == 0:
                    val = {"loss": self.validate(), "loss/expression": self.last_val_expression_loss}
                    self.logger.log(step, val, kind="val")
                if "grad_norm" in metrics:
                    self.logger.log(step, metrics)
                    for fn in self.callbacks:
                        fn(self, step, metrics)
                self.logger.advance(step, metrics["loss"], metrics["lr"], self.last_val_loss)
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps:
                    last_ckpt = self.last_checkpoint = self.save() or find_checkpoint(self.out_dir)
        finally:
            self.logger.close()
        status = "completed" if self.step >= cfg.steps else "paused"
        return TrainResult(status, self.step, self.out_dir, last_ckpt, metrics.get("loss"),
                           self.last_val_loss)


def _tokens(batch: CellBatch) -> int:
    return int(batch.gene_ids.numel() if batch.packed else batch.seq_lens.sum())


def pretrain(config: TrainConfig, *, resume: bool = False, until: int | None = None) -> TrainResult:
    """Run masked-expression pretraining as ``config`` describes (on one process or under torchrun).

    Parameters
    ----------
    config
        The resolved configuration (see :meth:`TrainConfig.from_preset`).
    resume
        Continue from the newest checkpoint in ``config.out_dir``.
    until
        Stop after this step (the schedule still spans ``config.steps``).

    Returns
    -------
    TrainResult
    """
    owns_group = not parallel.is_initialized()
    trainer = Trainer(config, resume=resume)
    result = trainer.fit(until)
    if owns_group and parallel.is_initialized():
        # Tear the group down here, once every rank is done with it and nothing (DDP's reducer, FSDP's
        # state) holds it any more: left to interpreter exit, gloo's threads may outlive Python and
        # abort the process.
        parallel.barrier()
        del trainer
        gc.collect()
        parallel.shutdown()
    return result
