"""The attention implementations ``sigcell bench train`` plugs into the same model.

Every provider trains the same :class:`~sigcell.model.MaskedExpressionModel`; only the attention call
differs. ``sigcell`` and ``softmax-varlen`` are the model's own paths; the others replace one method of
:class:`sigcell.model.attention.Attention` for the duration of a measurement (:meth:`TrainProvider.patch`),
so the model package never depends on a benchmark peer.

===================  =========  ==================================================================
name                 layouts    attention call
===================  =========  ==================================================================
``sigcell``          both       the model's sigmoid: sigcell's op (padded ``seq_lens`` / varlen)
``sdpa-cudnn``       padded     torch SDPA, cuDNN backend; key-padding mask unless the batch is full
``sdpa-flash``       padded     torch SDPA, flash backend; full batches only (flash refuses masks)
``sdpa-efficient``   padded     torch SDPA, memory-efficient backend; mask as cuDNN
``sdpa-math``        padded     torch SDPA, math backend (the CPU's softmax)
``softmax-varlen``   packed     the model's packed softmax: torch ``varlen_attn`` (FlashAttention varlen)
``tritonsigmoid``    padded     TritonSigmoid 0.1.2 ``sigmoid_attention`` / ``sigmoid_attention_padded``
===================  =========  ==================================================================
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from sigcell.bench.train_cases import TrainCase

__all__ = ["TRAIN_PROVIDERS", "TRAIN_PROVIDER_GROUPS", "TrainProvider", "resolve_train_providers"]


@contextlib.contextmanager
def _replaced(owner: type, name: str, value: object) -> Iterator[None]:
    """Set ``owner.name = value`` for the duration of the block."""
    old = owner.__dict__[name]
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


class TrainProvider:
    """Base class: one way to compute the model's attention.

    Attributes
    ----------
    name
        Identifier on the command line and in the results.
    attention
        The model's ``attention`` setting (``"sigmoid"`` or ``"softmax"``).
    layouts
        Batch layouts the provider can train on.
    """

    name: str = ""
    attention: str = "sigmoid"
    layouts: tuple[str, ...] = ("padded", "packed")

    def unavailable(self, device: torch.device, dtype: str, model_config) -> str | None:
        """Why the provider cannot run at all here (``None`` if it can)."""
        return None

    def skip_reason(self, case: TrainCase, layout: str) -> str | None:
        """Why the provider does not run ``case`` in ``layout`` (``None`` if it does)."""
        if layout not in self.layouts:
            return f"{self.name} has no {layout} path"
        return None

    def patch(self, case: TrainCase, layout: str) -> contextlib.AbstractContextManager:
        """Context in which the model's attention is this provider's (default: the model's own path)."""
        return contextlib.nullcontext()

    def note(self, case: TrainCase, layout: str) -> str | None:
        """What the reader should know about this measurement."""
        return None


class SigcellProvider(TrainProvider):
    """The model's sigmoid attention: sigcell's Triton op (plain PyTorch on the CPU)."""

    name = "sigcell"

    def unavailable(self, device, dtype, model_config):
        try:
            import sigcell.ops  # noqa: F401
        except Exception as err:  # any import failure is a reason to skip, reported as-is
            return f"sigcell.ops does not import: {type(err).__name__}: {err}"
        return None


class SdpaProvider(TrainProvider):
    """The model's padded softmax attention under ``sdpa_kernel([backend])``.

    Full batches drop the key-padding mask (every key is valid), so backends that refuse masks can run;
    padded batches keep the model's mask.
    """

    attention = "softmax"
    layouts = ("padded",)

    def __init__(self, name: str, backend: str, needs_cuda: bool = True, masks: bool = True) -> None:
        self.name, self.backend, self.needs_cuda, self.masks = name, backend, needs_cuda, masks

    def unavailable(self, device, dtype, model_config):
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: F401
        except ImportError as err:
            return f"torch.nn.attention.sdpa_kernel is missing in torch {torch.__version__}: {err}"
        if not hasattr(SDPBackend, self.backend):
            return f"torch {torch.__version__} has no SDPA backend {self.backend}"
        if self.needs_cuda and device.type != "cuda":
            return f"SDPA backend {self.backend} needs a CUDA GPU"
        return None

    def skip_reason(self, case, layout):
        if layout == "packed":
            return ("SDPA has no packed (varlen) entry; packed softmax is softmax-varlen "
                    "(the padded SDPA providers are the masked softmax)")
        if not self.masks and not case.is_full:
            return f"SDPA {self.backend} refuses an attention mask; padded batches need a key-padding mask"
        return None

    @contextlib.contextmanager
    def patch(self, case, layout):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from sigcell.model.attention import Attention

        original = Attention.__dict__["_sdpa_padded"]
        full = case.is_full

        def sdpa_padded(module, q, k, v, seq_lens, key_bias):
            if not full or key_bias is not None:
                return original(module, q, k, v, seq_lens, key_bias)
            return F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=module.scale,
                enable_gqa=module.n_kv_heads != module.n_heads).transpose(1, 2)

        with sdpa_kernel([getattr(SDPBackend, self.backend)]), _replaced(Attention, "_sdpa_padded",
                                                                           sdpa_padded):
            yield

    def note(self, case, layout):
        if case.is_full:
            return "full batch: no mask"
        return "key-padding mask over [B, max length]"


class SoftmaxVarlenProvider(TrainProvider):
    """The model's packed softmax on CUDA: ``torch.nn.attention.varlen.varlen_attn``."""

    name = "softmax-varlen"
    attention = "softmax"
    layouts = ("packed",)

    def unavailable(self, device, dtype, model_config):
        from sigcell.model import attention

        if device.type != "cuda":
            return "torch varlen_attn (FlashAttention varlen) runs on CUDA only"
        if attention._torch_varlen()[0] is None:
            return f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn"
        if dtype != "bf16":
            return f"varlen_attn needs bf16 / fp16, the run is {dtype}"
        if model_config.gene_key_bias:
            return "varlen_attn has no key bias; the model would fall back to padded SDPA"
        return None

    def patch(self, case, layout):
        from sigcell.model import attention

        return _replaced_module_attr(attention, "USE_TORCH_VARLEN", True)


@contextlib.contextmanager
def _replaced_module_attr(module, name: str, value: object) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


class TritonSigmoidProvider(TrainProvider):
    """TritonSigmoid 0.1.2 in place of sigcell's op (same scale, same ``-log n`` bias), padded layout only."""

    name = "tritonsigmoid"
    layouts = ("padded",)
    path: str | None = None  # set from --tritonsigmoid

    def unavailable(self, device, dtype, model_config):
        from sigcell.bench.providers import load_tritonsigmoid

        if device.type != "cuda":
            return "TritonSigmoid needs a CUDA GPU"
        module, why = load_tritonsigmoid(self.path)
        if module is None:
            return why
        if "PYTEST_VERSION" in os.environ:
            return ("PYTEST_VERSION is set: TritonSigmoid would autotune over a single test config; "
                    "run outside pytest")
        if model_config.sigmoid_bias != "neg_log_n" or model_config.gene_key_bias:
            return ("TritonSigmoid takes one scalar bias (-log n) and no trainable key bias; the model uses "
                    f"sigmoid_bias={model_config.sigmoid_bias!r}, gene_key_bias={model_config.gene_key_bias}")
        return None

    def skip_reason(self, case, layout):
        if layout == "packed":
            return "TritonSigmoid 0.1.2 has no varlen (packed) entry"
        return None

    @contextlib.contextmanager
    def patch(self, case, layout):
        from sigcell.bench.providers import load_tritonsigmoid
        from sigcell.model.attention import Attention

        module, why = load_tritonsigmoid(self.path)
        if module is None:
            raise RuntimeError(why)
        full = case.is_full

        def attend(attn, q, k, v, layout_, key_bias):
            if full:
                return module.sigmoid_attention(q, k, v, scale=attn.scale)
            lens = layout_.seq_lens
            return module.sigmoid_attention_padded(q, k, v, seq_lens_k=lens, seq_lens_q=lens,
                                                   scale=attn.scale)

        with _replaced(Attention, "_attend", attend):
            yield

    def note(self, case, layout):
        return "sigmoid_attention (dense)" if case.is_full else "sigmoid_attention_padded"


TRAIN_PROVIDERS: dict[str, TrainProvider] = {
    p.name: p
    for p in (
        SigcellProvider(),
        SdpaProvider("sdpa-cudnn", "CUDNN_ATTENTION"),
        SdpaProvider("sdpa-flash", "FLASH_ATTENTION", masks=False),
        SdpaProvider("sdpa-efficient", "EFFICIENT_ATTENTION"),
        SdpaProvider("sdpa-math", "MATH", needs_cuda=False),
        SoftmaxVarlenProvider(),
        TritonSigmoidProvider(),
    )
}

TRAIN_PROVIDER_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(TRAIN_PROVIDERS),
    "softmax": tuple(n for n, p in TRAIN_PROVIDERS.items() if p.attention == "softmax"),
    "sdpa": ("sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math"),
    "sigmoid": ("sigcell", "tritonsigmoid"),
}


def _default_group(device: torch.device) -> tuple[str, ...]:
    # The math backend materializes B x H x L x L scores: the CPU's softmax only.
    left_out = {"sdpa-math"} if device.type == "cuda" else set()
    return tuple(n for n in TRAIN_PROVIDERS if n not in left_out)


def resolve_train_providers(spec: list[str] | tuple[str, ...], device: torch.device,
                            exclude: list[str] | tuple[str, ...] = ()) -> list[TrainProvider]:
    """Expand provider names and groups (``default``, ``all``, ``softmax``, ``sdpa``, ``sigmoid``).

    Parameters
    ----------
    spec
        Names or groups; duplicates are dropped, registry order is kept.
    device
        The run's device (``default`` leaves out ``sdpa-math`` on CUDA).
    exclude
        Names or groups to leave out.

    Returns
    -------
    list of :class:`TrainProvider`.
    """
    def expand(items) -> set[str]:
        names: set[str] = set()
        for item in (i.strip() for i in items):
            if not item:
                continue
            if item == "default":
                names.update(_default_group(device))
            elif item in TRAIN_PROVIDER_GROUPS:
                names.update(TRAIN_PROVIDER_GROUPS[item])
            elif item in TRAIN_PROVIDERS:
                names.add(item)
            else:
                choices = [*TRAIN_PROVIDERS, *TRAIN_PROVIDER_GROUPS, "default"]
                msg = f"unknown provider {item!r}; choose from {', '.join(choices)}"
                raise ValueError(msg)
        return names

    chosen = expand(spec) - expand(exclude)
    if not chosen:
        msg = f"no provider left to run (asked for {list(spec)}, excluded {list(exclude)})"
        raise ValueError(msg)
    return [p for n, p in TRAIN_PROVIDERS.items() if n in chosen]
