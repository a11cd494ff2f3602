"""The training configuration: nested dataclasses, the single source of defaults.

A run's configuration is built in three layers: these defaults, then a preset / YAML file
(``sigcell/configs/tiny.yaml``...), then overrides (CLI flags, ``--set section.field=value``). The result is
written to ``<out_dir>/config.yaml`` and into every checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sigcell.model.config import ModelConfig
from sigcell.model.presets import load_preset

LAYOUTS = ("packed", "padded")
PRECISIONS = ("auto", "bf16", "fp32")
PARALLELS = ("ddp", "fsdp")
DEVICES = ("auto", "cpu", "cuda")
COMPILES = ("auto", "on", "off")


def _fail(msg: str) -> None:
    raise ValueError(msg)


@dataclass
class DataConfig:
    """Where cells come from and how batches are built."""

    corpus: str | None = None  # corpus directory (sigcell.data); None = synthetic cells
    vocab: str | None = None  # gene vocabulary JSON copied into checkpoints (default: the corpus's own)
    layout: str = "packed"  # "packed" (cu_seqlens, no padding) or "padded" (seq_lens)
    batch_size: int = 16  # cells per micro-batch per rank (global batch = batch_size * grad_accum * world)
    # Corpus only: cut micro-batches by tokens instead (padded counts cells x longest, packed the sum of
    # lengths), so full-length cells of very different sizes make batches of similar cost; None = batch_size.
    token_budget: int | None = None
    max_genes: int | None = None  # keep at most this many genes per cell (plus <cls>); None = all
    mask_fraction: float = 0.15  # fraction of each cell's genes masked for prediction (>= 1 gene per cell)
    num_workers: int = 0  # corpus only: threads that gather and collate the next batches ahead (0 = none)
    synthetic_min_genes: int = 32  # synthetic cells: fewest expressed genes
    synthetic_max_genes: int = 256  # synthetic cells: most expressed genes
    synthetic_cell_types: int = 8  # synthetic cells: number of latent cell types (gene programs)

    def validate(self) -> None:
        _choice("data.layout", self.layout, LAYOUTS)
        _int("data.batch_size", self.batch_size)
        if self.token_budget is not None:
            _int("data.token_budget", self.token_budget)
            if self.corpus is None:
                _fail("data.token_budget applies to corpus training (--corpus); synthetic cells are "
                      "batched by data.batch_size")
        if self.max_genes is not None:
            _int("data.max_genes", self.max_genes)
        _int("data.num_workers", self.num_workers, minimum=0)
        _int("data.synthetic_min_genes", self.synthetic_min_genes)
        _int("data.synthetic_max_genes", self.synthetic_max_genes)
        _int("data.synthetic_cell_types", self.synthetic_cell_types)
        if self.synthetic_max_genes < self.synthetic_min_genes:
            _fail(f"data.synthetic_max_genes ({self.synthetic_max_genes}) must be >= "
                  "data.synthetic_min_genes "
                  f"({self.synthetic_min_genes})")
        if not (isinstance(self.mask_fraction, (int, float)) and 0.0 < self.mask_fraction < 1.0):
            _fail(f"data.mask_fraction must lie in (0, 1), got {self.mask_fraction!r}; "
                  "0.15 is the BERT choice")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay."""

    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 0.05  # AdamW decay of weight matrices and embeddings (never norms or biases)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay (0.95 is steadier than 0.999 for transformers)
    eps: float = 1e-8  # AdamW epsilon
    warmup_steps: int = 100  # linear warmup from lr / warmup_steps to lr
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    clip_grad_norm: float | None = 1.0  # max global gradient norm; None = no clipping (--no-clip)

    def validate(self) -> None:
        _float("optim.lr", self.lr, positive=True)
        _float("optim.weight_decay", self.weight_decay)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                _fail(f"optim.{name} must lie in [0, 1), got {value!r}")
        _float("optim.eps", self.eps, positive=True)
        _int("optim.warmup_steps", self.warmup_steps, minimum=0)
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0.0 <= self.min_lr_ratio <= 1.0):
            _fail(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if self.clip_grad_norm is not None:
            _float("optim.clip_grad_norm", self.clip_grad_norm, positive=True)


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; see ``sigcell/configs/*.yaml`` for presets.

    Examples
    --------
    >>> cfg = TrainConfig.from_preset("tiny", overrides={"steps": 10, "model.attention": "softmax"})
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out_dir: str = "runs/sigcell"  # run directory: config, metrics, TensorBoard logs, checkpoints
    steps: int = 1000  # optimizer steps in the whole run (the schedule ends here)
    grad_accum: int = 1  # micro-batches per optimizer step
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32"
    device: str = "auto"  # "auto" (CUDA if available), "cpu" or "cuda"
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated) or "fsdp" (FSDP2 sharding)
    # torch.compile of the model: "auto" = on for CUDA, off on the CPU (see benchmarks/NOTES.md for
    # the measured step times), "on" or "off".
    compile: str = "auto"
    seed: int = 0  # seeds init, synthetic data, masking and dropout
    log_every: int = 1  # steps between metric records (JSONL + TensorBoard)
    val_every: int = 100  # steps between validation passes; 0 = never
    val_batches: int = 4  # micro-batches per validation pass (per rank)
    ckpt_every: int = 200  # steps between checkpoints (and one at the end); 0 = only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    progress: bool = True  # rich progress bar on the terminal (rank 0)
    tensorboard: bool = True  # also write TensorBoard event files

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        if isinstance(self.data, dict):
            self.data = _from_dict(DataConfig, self.data, "data")
        if isinstance(self.optim, dict):
            self.optim = _from_dict(OptimConfig, self.optim, "optim")
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        self.model.validate()
        self.data.validate()
        self.optim.validate()
        _int("steps", self.steps)
        _int("grad_accum", self.grad_accum)
        _choice("precision", self.precision, PRECISIONS)
        _choice("device", self.device, DEVICES)
        _choice("parallel", self.parallel, PARALLELS)
        _choice("compile", self.compile, COMPILES)
        _int("seed", self.seed, minimum=0)
        _int("log_every", self.log_every)
        _int("val_every", self.val_every, minimum=0)
        _int("val_batches", self.val_batches)
        _int("ckpt_every", self.ckpt_every, minimum=0)
        _int("keep_checkpoints", self.keep_checkpoints)
        if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
            _fail(f"out_dir must be a non-empty path, got {self.out_dir!r}")

    # ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (sections ``model``, ``data``, ``optim`` and the top-level fields)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a nested dict, rejecting unknown keys with the list of valid ones."""
        return _from_dict(cls, values, "")

    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike = "tiny",
                    overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A preset / YAML file with dotted overrides applied (``{"optim.lr": 1e-3, "steps": 10}``)."""
        values = load_preset(name_or_path)
        return cls.from_dict(apply_overrides(values, overrides or {}))

    def to_yaml(self) -> str:
        """The resolved configuration as YAML."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of nested ``values`` with ``{"section.field": value}`` overrides set.

    Unknown names are rejected with the valid ones listed.
    """
    out = copy.deepcopy(values)
    sections = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig}
    top = {f.name for f in fields(TrainConfig)} - set(sections)
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in top:
            out[parts[0]] = value
        elif len(parts) == 2 and parts[0] in sections:
            known = {f.name for f in fields(sections[parts[0]])}
            if parts[1] not in known:
                _fail(f"unknown setting {key!r}; valid {parts[0]}.* names are {sorted(known)}")
            out.setdefault(parts[0], {})[parts[1]] = value
        else:
            _fail(f"unknown setting {key!r}; use one of {sorted(top)} or section.field with a section in "
                  f"{sorted(sections)}")
    return out


def _from_dict(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        _fail(f"config section {where or 'top level'!r} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        _fail(f"unknown config field(s) {[prefix + u for u in unknown]}; valid {where or 'top-level'} fields "
              f"are {sorted(known)}")
    obj = cls(**values)
    if hasattr(obj, "validate") and cls is not TrainConfig:
        obj.validate()
    return obj


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(f"{name} must be one of {list(choices)}, got {value!r}")


def _int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(f"{name} must be an integer >= {minimum}, got {value!r}")


def _float(name: str, value: Any, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        _fail(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
