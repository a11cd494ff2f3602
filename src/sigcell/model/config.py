"""The model configuration: one dataclass holding every architectural choice and its default.

``ModelConfig`` is the single source of model defaults; presets (``sigcell/configs/*.yaml``) and CLI flags
only override fields. ``validate()`` runs on construction, so an invalid value fails where it enters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

ATTENTIONS = ("sigmoid", "softmax")
VALUE_ENCODINGS = ("continuous", "binned", "rank")
POOLINGS = ("cls", "mean")
CELL_OBJECTIVES = ("none", "mvc", "profile")
SIGMOID_BIASES = ("neg_log_n", "learned")
NORMS = ("layernorm", "rmsnorm")

# Special token ids shared with sigcell.data (see sigcell.data.batch).
PAD_ID, CLS_ID, MASK_ID = 0, 1, 2
N_SPECIAL_TOKENS = 3


@dataclass
class ModelConfig:
    """Architecture of a :class:`~sigcell.model.CellEncoder` and its pretraining head.

    The softmax and sigmoid models share every field; ``attention`` is the only switch between them.
    """

    # Vocabulary and inputs -------------------------------------------------------------------------
    vocab_size: int = 20_003  # token ids incl. the 3 specials (pad, cls, mask); set from the gene vocabulary
    value_encoding: str = "binned"  # "continuous" (float values), "binned" (int bins), "rank" (order = rank)
    n_bins: int = 51  # binned encoding: bins 0..n_bins-1 (0 = zero expression), as scGPT
    max_rank: int = 4096  # rank encoding: positions >= max_rank share the last position embedding
    # Transformer ---------------------------------------------------------------------------------------
    d_model: int = 256  # width of the residual stream
    n_layers: int = 4  # number of pre-norm transformer blocks
    n_heads: int = 4  # attention heads; head dim = d_model / n_heads
    n_kv_heads: int | None = None  # None = n_heads (multi-head); fewer gives grouped-query attention
    d_ff: int | None = None  # MLP hidden width; None = 4 * d_model
    norm: str = "layernorm"  # "layernorm" or "rmsnorm" (pre-norm blocks and the final norm)
    norm_eps: float = 1e-5  # epsilon of every norm
    dropout: float = 0.0  # dropout on the residual branches (0 for pretraining at scale)
    init_std: float = 0.02  # std of the normal init of linear and embedding weights
    # Attention ---------------------------------------------------------------------------------------
    attention: str = "sigmoid"  # "sigmoid" (sigcell op) or "softmax" (torch SDPA): the only difference
    qk_norm: bool = False  # normalize q and k per head (RMSNorm) before the dot product; bounds logit growth
    layer_scale: bool = False  # multiply each residual branch by a learned per-channel gain (CaiT)
    layer_scale_init: float = 1e-4  # initial LayerScale gain when layer_scale is on
    sigmoid_bias: str = "neg_log_n"  # sigmoid only: "neg_log_n" (b = -log n_keys per cell) or "learned"
    sigmoid_bias_init: float = -math.log(1024)  # initial learned bias per head (-log of a typical length)
    gated_attention: bool = False  # multiply the attention output by sigmoid(x W_g), per channel (Qiu 2025)
    gene_key_bias: bool = False  # learn one additive logit bias per gene id and layer (the op's key_bias)
    # Outputs -----------------------------------------------------------------------------------------
    pooling: str = "cls"  # cell embedding: "cls" (the <cls> token) or "mean" (mean over genes, no padding)
    # Cell-level objective ----------------------------------------------------------------------------
    # Masked-expression alone gives the pooled cell embedding no loss at all (issue 17). "profile" (the
    # default) has the cell embedding predict the cell's whole expression profile over the vocabulary;
    # "mvc" predicts each masked gene's value from (cell embedding, gene embedding), in the spirit of
    # scGPT's MVC. Measured on the pooled corpus (H200, small preset, benchmarks/NOTES.md 2026-12-04):
    # profile lifts held-out NMI from chance to 0.47-0.66, mvc leaves it at the random-init level.
    # "none" = masked-expression only, what every run before this field did.
    cell_objective: str = "profile"  # "none", "mvc" or "profile" (see sigcell.model.heads)
    cell_loss_weight: float = 1.0  # weight of the cell objective's per-token loss beside masked-expression

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Number of key / value heads (``n_kv_heads`` or ``n_heads``)."""
        return self.n_kv_heads or self.n_heads

    @property
    def ff_dim(self) -> int:
        """MLP hidden width (``d_ff`` or ``4 * d_model``)."""
        return self.d_ff or 4 * self.d_model

    @property
    def objective(self) -> str:
        """Masked-expression target: "regression" (continuous), "bins" (binned) or "gene_id" (rank)."""
        return {"continuous": "regression", "binned": "bins", "rank": "gene_id"}[self.value_encoding]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field, what was expected and what to do."""
        _choice("attention", self.attention, ATTENTIONS)
        _choice("value_encoding", self.value_encoding, VALUE_ENCODINGS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("cell_objective", self.cell_objective, CELL_OBJECTIVES)
        _choice("sigmoid_bias", self.sigmoid_bias, SIGMOID_BIASES)
        _choice("norm", self.norm, NORMS)
        for name in ("qk_norm", "layer_scale", "gated_attention", "gene_key_bias"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"ModelConfig.{name} must be true or false, got {getattr(self, name)!r}")
        _positive_int("vocab_size", self.vocab_size, minimum=N_SPECIAL_TOKENS + 1)
        _positive_int("n_bins", self.n_bins, minimum=2)
        _positive_int("max_rank", self.max_rank)
        _positive_int("d_model", self.d_model)
        _positive_int("n_layers", self.n_layers)
        _positive_int("n_heads", self.n_heads)
        if self.n_kv_heads is not None:
            _positive_int("n_kv_heads", self.n_kv_heads)
        if self.d_ff is not None:
            _positive_int("d_ff", self.d_ff)
        if self.d_model % self.n_heads:
            _fail(f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                  f"pick n_heads from {[h for h in range(1, 65) if self.d_model % h == 0][-6:]}")
        if not 1 <= self.head_dim <= 256:
            _fail(f"ModelConfig: head dim d_model / n_heads = {self.head_dim} must lie in [1, 256]; "
                  "change d_model or n_heads")
        if self.n_heads % self.kv_heads:
            _fail(f"ModelConfig.n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.kv_heads}) "
                  "for grouped-query attention")
        _finite("norm_eps", self.norm_eps, low=0.0, low_open=True)
        _finite("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        _finite("init_std", self.init_std, low=0.0, low_open=True)
        _finite("layer_scale_init", self.layer_scale_init, low=0.0, low_open=True)
        _finite("sigmoid_bias_init", self.sigmoid_bias_init)
        _finite("cell_loss_weight", self.cell_loss_weight, low=0.0)
        if self.cell_objective != "none" and self.cell_loss_weight == 0:
            _fail(f"ModelConfig.cell_loss_weight is 0 with cell_objective {self.cell_objective!r}: the cell "
                  "head would hold parameters that never learn; set cell_objective 'none' to switch it off")

    # ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (for YAML / JSON / checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones.

        A partial dict (a preset, a user YAML, overrides) takes the dataclass defaults for what it leaves
        out. A complete dump written before some fields existed (every run's ``config.yaml`` and
        checkpoint holds all fields of its time) takes :data:`LEGACY_VALUES` for those fields instead:
        the behaviour of the code that wrote it, so old checkpoints load with the modules they were
        trained with (e.g. no cell-objective head).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            _fail(f"ModelConfig: unknown field(s) {unknown}; valid fields are {sorted(known)}")
        if set(values) >= known - set(LEGACY_VALUES):
            values = {**{k: v for k, v in LEGACY_VALUES.items() if k not in values}, **values}
        return cls(**values)


# Fields added after the first release, with the value that reproduces what the code did before they
# existed; ``ModelConfig.from_dict`` applies them to complete dumps that lack them (see its docstring).
# A new field whose default changes behaviour must be added here.
LEGACY_VALUES: dict[str, Any] = {"cell_objective": "none", "cell_loss_weight": 1.0}


def _fail(msg: str) -> None:
    raise ValueError(msg)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(f"ModelConfig.{name} must be one of {list(choices)}, got {value!r}")


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(f"ModelConfig.{name} must be an integer >= {minimum}, got {value!r}")


def _finite(name: str, value: Any, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}, "
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        rng = f" in {lo or '(-inf, '}{hi or 'inf)'}" if (low is not None or high is not None) else ""
        _fail(f"ModelConfig.{name} must be a finite number{rng}, got {value!r}")
