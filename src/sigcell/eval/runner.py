"""Stage 2 of ``sigcell compare``: pretrain, embed and score every (dataset, attention, seed) run.

Reads only what ``prepare`` wrote (numpy arrays, JSON, the gene vocabulary) and imports only torch,
numpy and sigcell's data / model / train code, so it runs on a bare GPU machine. Each run writes into
``<runs>/<dataset>/<attention>-seed<k>/`` the trainer's own files (``config.yaml``, ``metrics.jsonl``,
``checkpoints/``) and then::

    embedding.npy   held-out cell embeddings [n_heldout, d_model] (float32, or float16 on request)
    embedding_init.npy  the same cells embedded by the untrained model (the random-initialisation control)
    tokenizer.json  how the cells were tokenized (``sigcell embed`` reads it)
    result.json     written last: held-out loss, timings, device, versions, the resolved config

A run with ``result.json`` is finished and is reused; a run with a checkpoint resumes from it.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sigcell.eval._io import read_json, write_array, write_json, write_text
from sigcell.eval.embed import TOKENIZER_FILE, embed_cells

__all__ = ["ATTENTIONS", "Plan", "PreparedDataset", "calibrate", "run_all", "run_dir", "run_one"]

ATTENTIONS = ("softmax", "sigmoid")
EVAL_MASK_SEED = 20_241_126  # held-out masks are the same for every run (any attention, any seed)
DEFAULT_STEPS = {"tiny": 300, "small": 1200}  # without --steps / --time-budget
TIMING_ITERS, TIMING_WARMUP = 10, 3


@dataclass
class PreparedDataset:
    """One prepared dataset in memory: all tokenized cells, the split, the vocabulary file."""

    name: str
    folder: Path
    meta: dict
    cells: Any  # sigcell.data.TokenizedCells over all tokenized cells
    train: np.ndarray
    heldout: np.ndarray

    @classmethod
    def load(cls, folder: str | os.PathLike) -> PreparedDataset:
        from sigcell.data.tokenize import TokenizedCells, TokenizerConfig

        folder = Path(folder)
        meta = read_json(folder / "meta.json")
        with np.load(folder / "tokens.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        n = arrays["offsets"].size - 1
        cells = TokenizedCells(arrays["gene_ids"], arrays["values"], arrays["offsets"],
                               np.arange(n, dtype=np.int64), TokenizerConfig(**meta["tokenizer"]))
        return cls(meta["name"], folder, meta, cells, arrays["train"], arrays["heldout"])

    def subset(self, which: str):
        """The ``"train"`` or ``"heldout"`` cells as their own ``TokenizedCells`` (in split order)."""
        from sigcell.data.tokenize import TokenizedCells

        idx = self.train if which == "train" else self.heldout
        ids, vals, lens = self.cells.gather(idx)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return TokenizedCells(ids, vals, offsets, idx.astype(np.int64), self.cells.config)


@dataclass
class Plan:
    """What the train stage runs; stored as ``<runs>/plan.json`` so a re-run resumes the same plan."""

    preset: str
    steps: int
    seeds: list[int]
    datasets: list[str]
    attentions: list[str]
    overrides: dict[str, Any]
    device: str = "auto"
    threads: int | None = None
    embedding_dtype: str = "float32"
    steps_from: str = "default"  # "default", "--steps" or "--time-budget N s"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def run_dir(runs: Path, dataset: str, attention: str, seed: int) -> Path:
    """Folder of one run."""
    return Path(runs) / dataset / f"{attention}-seed{seed}"


def _config(plan: Plan, data: PreparedDataset, attention: str, seed: int, out_dir: Path):
    """The resolved TrainConfig of one run: the preset, the dataset's vocabulary, the plan's schedule."""
    from sigcell.model.presets import load_preset
    from sigcell.train.config import TrainConfig

    steps = plan.steps
    preset_warmup = load_preset(plan.preset).get("optim", {}).get("warmup_steps", 100)
    batch = load_preset(plan.preset).get("data", {}).get("batch_size", 16)
    batch = plan.overrides.get("data.batch_size", batch)
    overrides = {
        "model.vocab_size": int(data.meta["vocab_size"]),
        "model.attention": attention,
        "data.max_genes": int(data.meta["tokenizer"]["max_genes"]),
        "seed": int(seed),
        "steps": int(steps),
        "out_dir": str(out_dir),
        "device": plan.device,
        # Warmup is capped at 10 % of a short run (the presets assume long runs).
        "optim.warmup_steps": int(min(preset_warmup, max(1, steps // 10))),
        "log_every": max(1, steps // 200),
        "val_every": max(1, steps // 10),
        "val_batches": int(min(8, math.ceil(data.heldout.size / batch))),
        "ckpt_every": max(1, steps // 4),
        "keep_checkpoints": 1,
        "progress": False,
        "tensorboard": False,  # no tensorboard on bare machines; metrics.jsonl has everything
        **plan.overrides,
    }
    config = TrainConfig.from_preset(plan.preset, overrides=overrides)
    tok = data.meta["tokenizer"]
    if config.model.value_encoding != tok["encoding"] or (
            tok["encoding"] == "binned" and config.model.n_bins != tok["n_bins"]):
        msg = (f"{data.folder} was tokenized as {tok['encoding']} with {tok['n_bins']} bins, but preset "
               f"{plan.preset!r} expects {config.model.value_encoding} with {config.model.n_bins}; re-run "
               f"`sigcell compare --stage prepare --preset {plan.preset}` into a new --out")
        raise ValueError(msg)
    return config


def heldout_loader(config, held_cells):
    """Held-out batches in a fixed order (no shuffling, no length buckets), in the run's layout."""
    from sigcell.data.loader import make_dataloader

    d = config.data
    return make_dataloader(held_cells, batch_size=d.batch_size, layout=d.layout, shuffle=False, bucket=False)


def _train_data(config, data: PreparedDataset, train_cells, held_cells):
    """TrainData as the corpus path builds it: shuffled length-bucketed batches, fixed held-out batches."""
    from sigcell.data.loader import make_dataloader
    from sigcell.train.corpus_data import EndlessLoader
    from sigcell.train.data import TrainData

    d = config.data
    loader = make_dataloader(train_cells, batch_size=d.batch_size, layout=d.layout, shuffle=True,
                             seed=config.seed, drop_last=len(train_cells) >= d.batch_size)
    val_loader = heldout_loader(config, held_cells)

    def val_source(n: int):
        return [(i, val_loader.collate(idx)) for i, idx in enumerate(val_loader.sampler.plan(0)[:n])]

    return TrainData(train=EndlessLoader(loader), val_source=val_source,
                     vocab_path=str(data.folder / "vocab.json"), info={"source": "sigcell compare"})


@torch.no_grad()
def _init_embedding(config, held_cells) -> np.ndarray:
    """The held-out cells embedded by an untrained model of the run's architecture (seeded by the run's
    seed; the global RNG is left as it was): the control a trained model has to beat."""
    from sigcell.model import MaskedExpressionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MaskedExpressionModel(config.model)
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    model.to("cuda" if cuda else "cpu")
    return embed_cells(model, held_cells, batch_size=config.data.batch_size, layout=config.data.layout,
                       precision=config.precision)


def heldout_loss(trainer, held_cells) -> float:
    """Mean masked-token loss over every held-out cell, with masks that are the same for every run."""
    from sigcell.data.loader import make_dataloader
    from sigcell.train.data import mix_seed
    from sigcell.train.masking import mask_batch

    cfg = trainer.config
    loader = make_dataloader(held_cells, batch_size=cfg.data.batch_size, layout=cfg.data.layout,
                             shuffle=False, bucket=False)
    model = trainer.model
    model.eval()
    total, count = 0.0, 0.0
    for i, idx in enumerate(loader.sampler.plan(0)):
        gen = torch.Generator().manual_seed(mix_seed(EVAL_MASK_SEED, i))
        batch = mask_batch(loader.collate(idx), cfg.data.mask_fraction, cfg.model.value_encoding, gen)
        with trainer.autocast:
            out = model(batch.to(trainer.device))
        total += float(out.loss_sum)
        count += float(out.n_masked)
    model.train()
    return total / max(count, 1.0)


def time_steps(trainer, train_cells, iters: int = TIMING_ITERS, warmup: int = TIMING_WARMUP) -> dict:
    """Forward + backward time on fixed training batches (no optimizer step; gradients dropped).

    The batches are the first ones of seed 0's order, so both attentions are timed on the same cells.
    """
    from sigcell.data.loader import make_dataloader
    from sigcell.train.data import mix_seed
    from sigcell.train.masking import mask_batch

    cfg = trainer.config
    loader = make_dataloader(train_cells, batch_size=cfg.data.batch_size, layout=cfg.data.layout,
                             shuffle=True, seed=0)
    plan = loader.sampler.plan(0)[:3]
    batches = [mask_batch(loader.collate(idx), cfg.data.mask_fraction, cfg.model.value_encoding,
                          torch.Generator().manual_seed(mix_seed(EVAL_MASK_SEED, i))).to(trainer.device)
               for i, idx in enumerate(plan)]
    model = trainer.model
    times = []
    for it in range(warmup + iters):
        batch = batches[it % len(batches)]
        _sync(trainer.device)
        start = time.perf_counter()
        with trainer.autocast:
            out = model(batch)
        (out.loss_sum / out.n_masked.clamp(min=1)).backward()
        _sync(trainer.device)
        if it >= warmup:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    tokens = [int(b.gene_ids.numel() if b.packed else b.seq_lens.sum()) for b in batches]
    return {"fwd_bwd_ms_median": 1e3 * float(np.median(times)), "fwd_bwd_ms_all": [1e3 * t for t in times],
            "tokens_per_batch": tokens, "iters": iters, "warmup": warmup}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _log_summary(path: Path) -> dict:
    """Train / val curves and step times from the trainer's ``metrics.jsonl`` (last record per step)."""
    import json

    train: dict[int, dict] = {}
    val: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "val":
                val[rec["step"]] = rec["loss"]
            elif rec.get("kind") == "train" and "step_time_s" in rec:
                train[rec["step"]] = rec
    step_times = [r["step_time_s"] for s, r in sorted(train.items()) if s > 1]  # step 1 includes warm-up
    return {"train_curve": [[s, r["loss"]] for s, r in sorted(train.items())],
            "val_curve": [[s, v] for s, v in sorted(val.items())],
            "logged_step_ms_median": 1e3 * float(np.median(step_times)) if step_times else None}


def _device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def run_one(plan: Plan, data: PreparedDataset, attention: str, seed: int, runs: Path,
            on_step=None) -> dict:
    """Pretrain, score and embed one run (or reuse it when finished). Returns its ``result.json``.

    ``on_step(step)`` is called after each logged training step (for progress displays).
    """
    from sigcell import __version__
    from sigcell.train.checkpoint import find_checkpoint
    from sigcell.train.trainer import Trainer

    out = run_dir(runs, data.name, attention, seed)
    result_path = out / "result.json"
    if result_path.is_file():
        result = read_json(result_path)
        if result.get("steps") == plan.steps:
            return result
        shutil.rmtree(out)  # a finished run of another plan: redo it
    resume = find_checkpoint(out) is not None
    if out.exists() and not resume:
        shutil.rmtree(out)  # crashed before its first checkpoint: start over cleanly
    config = _config(plan, data, attention, seed, out)
    train_cells, held_cells = data.subset("train"), data.subset("heldout")
    init_path = out / "embedding_init.npy"
    if not init_path.is_file():
        write_array(init_path, _init_embedding(config, held_cells).astype(plan.embedding_dtype))
    start = time.perf_counter()
    callbacks = (lambda _trainer, step, _metrics: on_step(step),) if on_step is not None else ()
    trainer = Trainer(config, resume=resume, data=_train_data(config, data, train_cells, held_cells),
                      callbacks=callbacks)
    outcome = trainer.fit()
    train_wall = time.perf_counter() - start
    write_text(out / TOKENIZER_FILE, _json(data.meta["tokenizer"]))
    emb = embed_cells(trainer.model, held_cells, batch_size=config.data.batch_size, layout=config.data.layout,
                      precision=config.precision)
    write_array(out / "embedding.npy", emb.astype(plan.embedding_dtype))
    result = {
        "dataset": data.name, "attention": attention, "seed": seed, "steps": plan.steps,
        "status": outcome.status, "message": outcome.message, "resumed": resume,
        "heldout_loss": heldout_loss(trainer, held_cells), "last_train_loss": outcome.last_loss,
        "train_wall_s": train_wall, **_log_summary(out / "metrics.jsonl"),
        "timing": time_steps(trainer, train_cells),
        "n_params": trainer.model.num_parameters(),
        "n_params_core": trainer.model.num_parameters(embeddings=False),
        "n_train": int(data.train.size), "n_heldout": int(data.heldout.size),
        "embedding_dtype": plan.embedding_dtype, "precision": config.precision,
        "sigcell": __version__, **_device_info(trainer.device),
        "config": config.to_dict(),
    }
    write_json(result_path, result)
    return result


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2) + "\n"


def calibrate(plan: Plan, datasets: list[PreparedDataset], warmup: int = 2, iters: int = 3) -> dict:
    """Seconds per optimizer step of each (dataset, attention), measured on a throwaway model.

    Used for the time estimate printed before training and to size ``--time-budget`` runs.
    """
    import tempfile

    from sigcell.train.trainer import Trainer

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sigcell-calibrate-") as tmp:
        for data in datasets:
            train_cells, held_cells = data.subset("train"), data.subset("heldout")
            for attention in plan.attentions:
                config = _config(plan, data, attention, plan.seeds[0], Path(tmp) / data.name / attention)
                trainer = Trainer(config, data=_train_data(config, data, train_cells, held_cells))
                times = []
                for i in range(warmup + iters):
                    start = time.perf_counter()
                    trainer.train_step()
                    _sync(trainer.device)
                    if i >= warmup:
                        times.append(time.perf_counter() - start)
                trainer.logger.close()
                out.setdefault(data.name, {})[attention] = float(np.median(times))
    return out


def pending_runs(plan: Plan, runs: Path) -> dict[tuple[str, str], int]:
    """Number of seeds still to run per (dataset, attention): no ``result.json`` of this step count."""
    out: dict[tuple[str, str], int] = {}
    for name in plan.datasets:
        for attention in plan.attentions:
            todo = 0
            for seed in plan.seeds:
                path = run_dir(runs, name, attention, seed) / "result.json"
                todo += not (path.is_file() and read_json(path).get("steps") == plan.steps)
            out[(name, attention)] = todo
    return out


def estimate_seconds(plan: Plan, step_s: dict, datasets: list[PreparedDataset],
                     pending: dict[tuple[str, str], int] | None = None) -> float:
    """Predicted train-stage wall time: steps x measured step time, plus validation, embedding, setup.

    ``pending`` (from :func:`pending_runs`) limits it to the runs still to do; default all.
    """
    total = 0.0
    for data in datasets:
        for attention in plan.attentions:
            n = len(plan.seeds) if pending is None else pending.get((data.name, attention), 0)
            t = step_s[data.name][attention]
            per_run = plan.steps * t * 1.1  # logging, validation passes, checkpoints
            per_run += (data.heldout.size / 8 + TIMING_ITERS + TIMING_WARMUP) * t * 0.5  # embed, loss, timing
            total += n * (per_run + 1.0)  # + model setup, file writes
    return total


def steps_for_budget(plan: Plan, step_s: dict, datasets: list[PreparedDataset], budget_s: float) -> int:
    """The largest step count whose estimate fits ``budget_s`` (at least 10)."""
    fixed = estimate_seconds(Plan(**{**plan.to_dict(), "steps": 0}), step_s, datasets)
    per_step = estimate_seconds(Plan(**{**plan.to_dict(), "steps": 1000}), step_s, datasets) - fixed
    return max(10, int((budget_s - fixed) / per_step * 1000))


def run_all(plan: Plan, datasets: list[PreparedDataset], runs: Path, bar=None) -> list[dict]:
    """Every run of the plan, in a fixed order (dataset, seed, attention); returns their results."""
    results = []
    for data in datasets:
        for seed in plan.seeds:
            for attention in plan.attentions:
                note = f"{data.name} {attention} seed {seed}"
                done = [0]

                def on_step(step: int, note: str = note, done: list = done) -> None:
                    if bar is not None:
                        bar.advance(step - done[0], note)
                    done[0] = step

                result = run_one(plan, data, attention, seed, runs, on_step=on_step)
                results.append(result)
                if bar is not None:
                    bar.advance(plan.steps - done[0], note)
                    bar.log(f"{note}: held-out loss {result['heldout_loss']:.4f} ({result['status']}, "
                            f"{result['train_wall_s']:.0f} s)")
    return results
