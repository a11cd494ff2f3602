"""Sigmoid attention inside Hugging Face transformers models (transformers >= 5).

transformers picks a model's attention through two registries keyed by the ``attn_implementation``
name: ``AttentionInterface`` (the function that computes attention) and ``AttentionMaskInterface`` (the
function that turns the user's 2-D padding mask into whatever that attention function wants). Without a
mask entry transformers passes no mask at all, so :func:`register` fills both: the mask entry reduces
the padding mask to one valid length per sequence, and the attention entry hands those lengths to
:func:`sigcell.sigmoid_attn_func` (padded batches) or :func:`sigcell.sigmoid_attn_varlen_func` (packed,
padding-free batches).

Usage::

    from transformers import AutoModelForMaskedLM, BertConfig
    from sigcell.integrations.transformers import enable, register

    register()  # name "sigmoid", bias -log(n)
    model = AutoModelForMaskedLM.from_config(BertConfig(...), attn_implementation="sigmoid")
    # or, for a model that already exists (checks that its class is supported first):
    model = enable(model)

Supported models
----------------
Bidirectional self-attention encoders whose attention module calls ``ALL_ATTENTION_FUNCTIONS`` and whose
mask is a key-padding mask: the BERT family (``SUPPORTED_MODEL_TYPES``; Geneformer is a
``BertForMaskedLM``), with any head (masked LM, sequence / token classification, ...). Others are
refused with :class:`UnsupportedModelError` because sigmoid attention would silently compute something
else:

- decoders and encoder-decoders (``is_decoder``, ``is_encoder_decoder``, ``add_cross_attention``): causal
  masks with a KV cache and left-padded generation, and cross-attention, whose padding is not the
  query's padding;
- models that fold positional or relative biases into a 4-D float mask (T5, DeBERTa-style, ALiBi
  models), or mix in sliding-window / chunked layers (ModernBERT): the kernel takes lengths only;
- models that compute attention themselves instead of calling the interface: the registration would
  never run.

Other encoders that pass these checks usually work; :func:`enable` accepts them with
``allow_untested=True``. The runtime checks (mask shape and pattern, causal flags, unsupported keyword
arguments) apply to every model either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

try:
    import transformers
    from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function
except ImportError as err:  # pragma: no cover - exercised only without the extra
    msg = (
        "sigcell.integrations.transformers needs Hugging Face transformers >= 5, which is not installed; "
        'install it with `pip install "sigcell[hf]"` (or `pip install "transformers>=5"`)'
    )
    raise ImportError(msg) from err

from sigcell.ops import sigmoid_attn_func, sigmoid_attn_varlen_func

if int(transformers.__version__.split(".")[0]) < 5:  # pragma: no cover - depends on the environment
    msg = (
        "sigcell.integrations.transformers needs transformers >= 5 (AttentionMaskInterface), got "
        f"{transformers.__version__}; upgrade with `pip install -U \"transformers>=5\"`"
    )
    raise ImportError(msg)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "KeyPaddingLengths",
    "UnsupportedModelError",
    "add_learned_bias",
    "check_model",
    "enable",
    "register",
]

#: ``config.model_type`` values whose attention path is checked by sigcell's tests or was verified
#: against a direct call of the op: bidirectional BERT-style self-attention, padding mask only.
SUPPORTED_MODEL_TYPES: frozenset[str] = frozenset({
    "bert",
    "camembert",
    "data2vec-text",
    "electra",
    "ernie",
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
})

# Names transformers already owns; registering over them would change every model that uses them.
_RESERVED_NAMES = frozenset({
    "eager", "sdpa", "flex_attention", "paged|eager",
    "flash_attention_2", "flash_attention_3", "flash_attention_4",
})

# Keyword arguments some models pass to the attention function that change its result in ways the
# kernel cannot reproduce.
_UNSUPPORTED_KWARGS = ("sliding_window", "softcap", "s_aux", "head_mask", "attention_bias", "position_bias")

#: Name of the per-head parameter that ``bias="learned"`` adds to each attention module.
LEARNED_BIAS_NAME = "sigmoid_bias"

BiasSpec = float | Literal["learned"] | None


class UnsupportedModelError(ValueError):
    """A model (or one of its attention calls) needs something sigcell's sigmoid attention cannot do."""


@dataclasses.dataclass(frozen=True)
class _Settings:
    name: str
    bias: BiasSpec
    scale: float | None
    attention_dropout: Literal["error", "ignore"]
    fast_sigmoid: bool | None


# Settings of each registered name, for `enable` and for error messages.
_REGISTERED: dict[str, _Settings] = {}


# ----------------------------------------------------------------------------------------------------
# The mask transformers hands to the attention function
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KeyPaddingLengths:
    """The mask object of the sigmoid implementation: one valid length per (right-padded) sequence.

    transformers builds it once per forward with the registered mask function and passes it unchanged to
    every layer's attention call, so the padding check runs once, not once per layer.

    Attributes
    ----------
    seq_lens
        int32 ``[B]`` valid lengths, or ``None`` when no token is padding.
    kv_length
        Padded length ``L`` the lengths refer to.
    """

    seq_lens: torch.Tensor | None
    kv_length: int

    def to(self, *args: Any, **kwargs: Any) -> KeyPaddingLengths:
        """Move to a device (as ``Tensor.to``); dtype arguments are ignored, the lengths stay int32."""
        device = kwargs.get("device")
        for a in args:
            if isinstance(a, (torch.device, str, int)):
                device = a
        if self.seq_lens is None or device is None:
            return self
        return dataclasses.replace(self, seq_lens=self.seq_lens.to(device))

    # Models that build the mask through transformers' helpers but then compute attention themselves
    # (``scores + attention_mask``) receive this object; fail loudly there instead of with a TypeError.
    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        _not_interface_model(getattr(func, "__name__", str(func)))

    def _arith(self, *_: Any) -> Any:
        _not_interface_model("arithmetic")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __and__ = __rand__ = __or__ = __ror__ = __invert__ = _arith


def _not_interface_model(op: str) -> None:
    _unsupported(
        "sigmoid attention: this model computes attention itself and used the sigmoid implementation's "
        f"mask object in `{op}`, instead of passing it to transformers' AttentionInterface; the model does "
        "not support custom attention implementations (see "
        "sigcell.integrations.transformers.SUPPORTED_MODEL_TYPES)"
    )


def _fail(msg: str) -> None:
    raise ValueError(msg)


def _unsupported(msg: str) -> None:
    raise UnsupportedModelError(msg)


def _checks_enabled() -> bool:
    # Checks that read tensor values sync with the device; they are skipped while torch.compile traces.
    return not torch.compiler.is_compiling()


def _lengths_from_keep(keep: torch.Tensor, where: str) -> torch.Tensor | None:
    """Valid lengths from a boolean ``[B, Lk]`` keep-mask; refuses anything but right padding."""
    if _checks_enabled():
        # Right padding: once a row has a padded key, every later key is padded too.
        valid_after_pad = keep[:, 1:] & ~keep[:, :-1]
        if bool(valid_after_pad.any()):
            row = int(valid_after_pad.any(dim=1).nonzero()[0, 0])
            _fail(
                f"sigmoid attention: {where} is not a right-padding mask: sequence {row} has a valid token "
                "after a padded one (left padding or holes); sigcell's kernel takes one valid length per "
                "sequence, so pad on the right (tokenizer.padding_side = 'right') or pack the batch "
                "(DataCollatorWithFlattening)"
            )
        if bool(keep.all()):
            return None
    return keep.sum(dim=1, dtype=torch.int32)


def _keep_from_2d(mask: torch.Tensor, batch: int, kv_length: int, where: str) -> torch.Tensor:
    if tuple(mask.shape) != (batch, kv_length):
        _fail(
            f"sigmoid attention: {where} must be a padding mask of shape [B, L] = [{batch}, {kv_length}], "
            f"got {tuple(mask.shape)}"
        )
    if mask.dtype == torch.bool:
        return mask
    if _checks_enabled() and bool(((mask != 0) & (mask != 1)).any()):
        _fail(
            f"sigmoid attention: {where} ({mask.dtype}) must hold only 0 (padding) and 1 (token); got "
            "other values; pass the tokenizer's attention_mask"
        )
    return mask != 0


def _keep_from_4d(mask: torch.Tensor, batch: int, q_length: int, kv_length: int) -> torch.Tensor:
    """A prepared 4-D mask ``[B, 1 | H, Lq, Lk]`` reduced to its key keep-mask ``[B, Lk]``, if it is one."""
    if mask.shape[0] not in (1, batch) or mask.shape[2] not in (1, q_length) or mask.shape[3] != kv_length:
        _fail(
            f"sigmoid attention: a 4-D attention mask must have shape [B, 1 or H, Lq, Lk] = [{batch}, *, "
            f"{q_length}, {kv_length}], got {tuple(mask.shape)}"
        )
    if mask.dtype == torch.bool:
        keep = mask
    elif mask.is_floating_point():
        # An additive mask: 0 keeps a key, a huge negative number (or -inf) drops it; anything else is a bias.
        keep = mask == 0
        if _checks_enabled() and bool((~keep & (mask > torch.finfo(mask.dtype).min / 2)).any()):
            _unsupported(
                "sigmoid attention: the 4-D float attention mask carries an additive bias (values other "
                "than 0 and -inf / dtype min), e.g. relative-position or ALiBi biases folded into the "
                "mask; sigcell's kernel takes padding lengths only, so this model is not supported"
            )
    else:
        keep = mask != 0
    if _checks_enabled() and not bool((keep == keep[:, :1, :1, :]).all()):
        _unsupported(
            "sigmoid attention: the 4-D attention mask is not a key-padding mask (it differs between "
            "queries or heads: causal, sliding-window, block or custom pattern); sigcell's kernel takes "
            "one valid length per sequence, so this mask cannot be honored"
        )
    return keep[:, 0, 0, :].expand(batch, kv_length)


def _lengths_from_mask(mask: Any, batch: int, q_length: int, kv_length: int) -> torch.Tensor | None:
    """The attention function's ``attention_mask`` as int32 lengths ``[B]`` (``None``: no padding)."""
    if mask is None:
        return None
    if isinstance(mask, KeyPaddingLengths):
        if mask.kv_length != kv_length:
            _unsupported(
                f"sigmoid attention: the padding mask covers {mask.kv_length} keys but the layer has "
                f"{kv_length}; this happens with cross-attention or a KV cache, which sigcell's "
                "integration does not support"
            )
        return mask.seq_lens
    if isinstance(mask, torch.Tensor) and mask.ndim == 2:
        return _lengths_from_keep(_keep_from_2d(mask, batch, kv_length, "attention_mask"), "attention_mask")
    if isinstance(mask, torch.Tensor) and mask.ndim == 4:
        return _lengths_from_keep(_keep_from_4d(mask, batch, q_length, kv_length), "the 4-D attention_mask")
    shape = f" with shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else ""
    _unsupported(
        f"sigmoid attention: cannot read an attention mask of type {type(mask).__name__}{shape}; expected "
        "a [B, L] padding mask (1 = token, 0 = padding) or None; the model may have been built for another "
        "attn_implementation"
    )
    raise AssertionError  # unreachable


_PACKED_SEQUENCES = object()  # marker: transformers' "tokens only see their own packed sequence" pattern


def _closure_value(fn: Callable, name: str) -> Any:
    code = getattr(fn, "__code__", None)
    if code is None or name not in code.co_freevars or fn.__closure__ is None:
        return None
    return fn.__closure__[code.co_freevars.index(name)].cell_contents


def _mask_leaves(fn: Callable) -> list[Any]:
    """The base patterns a transformers mask function is built from.

    transformers (>= 5) composes masks out of closures: ``and_masks(...)`` of several patterns, and for
    padding-free batches ``remap_positions_for_packed_sequence(pattern)`` together with
    ``packed_sequence_mask_function`` (each token sees only its own sequence). The packed-sequence part is
    what sigcell's varlen path does natively (from ``position_ids`` / ``cu_seq_lens``), so it is reported
    as :data:`_PACKED_SEQUENCES`; anything unrecognised is returned as itself and rejected by the caller.
    """
    qualname = getattr(fn, "__qualname__", "")
    if qualname == "and_masks.<locals>.and_mask":
        parts = _closure_value(fn, "mask_functions")
        if parts is not None:
            return [leaf for part in parts for leaf in _mask_leaves(part)]
    if qualname == "remap_positions_for_packed_sequence.<locals>.inner_mask":
        inner = _closure_value(fn, "mask_function")
        if inner is not None:
            return _mask_leaves(inner)
    if qualname == "packed_sequence_mask_function.<locals>.inner_mask":
        return [_PACKED_SEQUENCES]
    return [fn]


def sigmoid_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int | torch.Tensor = 0,
    kv_offset: int = 0,
    mask_function: Callable = bidirectional_mask_function,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> KeyPaddingLengths:
    """The ``AttentionMaskInterface`` entry: the user's 2-D padding mask -> :class:`KeyPaddingLengths`.

    transformers calls it from ``create_bidirectional_mask`` / ``create_causal_mask`` with the pattern to
    build (``mask_function``); only the plain bidirectional pattern without a cache is accepted.

    Parameters
    ----------
    batch_size, q_length, kv_length
        Sizes of the attention the mask is for.
    q_offset, kv_offset
        Cache offsets; must be 0.
    mask_function
        The pattern transformers asks for; must be ``bidirectional_mask_function``.
    attention_mask
        Boolean ``[B, L]`` padding mask (True = token) or ``None``.
    **kwargs
        Extra arguments transformers passes to every mask function (dtype, config, device, ...); unused.

    Returns
    -------
    KeyPaddingLengths
        int32 lengths ``[B]`` (``None`` when nothing is padded) and ``kv_length``.
    """
    leaves = _mask_leaves(mask_function)
    if causal_mask_function in leaves:
        _unsupported(
            "sigmoid attention: this model asks for a causal mask (a decoder, or an encoder with "
            "is_decoder=True); sigcell's transformers integration supports bidirectional encoders only "
            "(see sigcell.integrations.transformers.SUPPORTED_MODEL_TYPES); keep this model on 'sdpa' or "
            "'eager'"
        )
    others = [f for f in leaves if f is not bidirectional_mask_function and f is not _PACKED_SEQUENCES]
    if others:
        name = getattr(others[0], "__qualname__", repr(others[0]))
        _unsupported(
            f"sigmoid attention: this model asks for a custom mask pattern ({name}: sliding-window, "
            "chunked, block or combined masks), but sigcell's kernel takes one valid length per sequence; "
            "only plain bidirectional encoders (e.g. BERT) are supported"
        )
    if not (isinstance(q_offset, int) and q_offset == 0 and kv_offset == 0):
        _unsupported(
            "sigmoid attention: the mask has a cache offset (KV cache or prefix tuning), which sigcell's "
            "integration does not support; run the encoder without a cache"
        )
    if q_length != kv_length:
        _unsupported(
            f"sigmoid attention: the mask is for {q_length} queries and {kv_length} keys (cross-attention "
            "or a cache); sigcell's integration supports self-attention of bidirectional encoders only"
        )
    lengths = None
    if attention_mask is not None:
        keep = _keep_from_2d(attention_mask, batch_size, kv_length, "attention_mask")
        lengths = _lengths_from_keep(keep, "attention_mask")
    return KeyPaddingLengths(seq_lens=lengths, kv_length=kv_length)


# ----------------------------------------------------------------------------------------------------
# The attention function
# ----------------------------------------------------------------------------------------------------


def _packed_offsets(
    kwargs: dict[str, Any], position_ids: torch.Tensor | None, batch: int, length: int
) -> tuple[torch.Tensor, int] | None:
    """``(cu_seqlens int32 [S + 1], max_seqlen)`` of a padding-free batch, or ``None`` if not packed.

    Like transformers' flash-attention path: explicit ``cu_seq_lens_q/k`` + ``max_length_q/k`` first
    (``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``), else restarts of ``position_ids`` in a
    batch of one row.
    """
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is not None or cu_k is not None:
        if cu_q is None or cu_k is None:
            _fail("sigmoid attention: packed inputs need both cu_seq_lens_q and cu_seq_lens_k, got only one")
        if cu_q.shape != cu_k.shape or (_checks_enabled() and not bool(torch.equal(cu_q, cu_k))):
            _unsupported(
                "sigmoid attention: cu_seq_lens_q and cu_seq_lens_k differ (cross-attention between "
                "packed sequences); only self-attention is supported"
            )
        max_len = kwargs.get("max_length_q")
        if max_len is None:
            max_len = int((cu_q[1:] - cu_q[:-1]).max()) if cu_q.numel() > 1 else 0
        return cu_q.to(torch.int32), int(max_len)
    if position_ids is None or batch != 1 or length <= 1:
        return None
    pos = position_ids.reshape(-1)
    if pos.numel() != length:
        _fail(f"sigmoid attention: position_ids have {pos.numel()} entries for a sequence of {length} tokens")
    first = pos.min()
    if not bool((pos - first != torch.arange(length, device=pos.device)).any()):
        return None  # one ordinary sequence
    # Packed sequences all restart at the same first position (0 for BERT, padding_idx + 1 for RoBERTa).
    starts = (pos == first).nonzero().reshape(-1).to(torch.int32)
    if int(starts[0]) != 0:
        _fail(
            "sigmoid attention: packed position_ids must start a sequence at token 0 (position "
            f"{int(first)}), got position {int(pos[0])}; pass cu_seq_lens_q / cu_seq_lens_k instead"
        )
    cu = torch.cat([starts, torch.tensor([length], dtype=torch.int32, device=starts.device)])
    return cu, int((cu[1:] - cu[:-1]).max())


def _learned_bias(module: nn.Module, heads: int, name: str) -> torch.Tensor:
    param = getattr(module, LEARNED_BIAS_NAME, None)
    if not isinstance(param, torch.Tensor) or tuple(param.shape) != (heads,):
        got = "none" if param is None else f"shape {tuple(getattr(param, 'shape', ()))}"
        _fail(
            f"sigmoid attention '{name}' uses bias='learned', but {type(module).__name__} has no parameter "
            f"'{LEARNED_BIAS_NAME}' of shape [{heads}] (got {got}); call "
            f"sigcell.integrations.transformers.enable(model, name='{name}', bias='learned') or "
            "add_learned_bias(model) before creating the optimizer"
        )
    return param


def _log_length_key_bias(lengths: torch.Tensor, size: int, packed: bool) -> torch.Tensor:
    """``-log(n)`` of each key's sequence, as the op's key bias (``[B, L]`` padded, ``[T]`` packed)."""
    neg_log = -torch.log(lengths.clamp(min=1).to(torch.float32))
    if packed:
        return torch.repeat_interleave(neg_log, lengths.to(torch.int64), output_size=size)
    return neg_log[:, None].expand(-1, size)


def _make_attention_forward(settings: _Settings) -> Callable:
    def sigmoid_attention_forward(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Any,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        """sigcell sigmoid attention with transformers' calling convention (q/k/v ``[B, H, L, D]``).

        Returns ``(out [B, L, H, D], None)``: attention weights are never materialized.
        """
        name = settings.name
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", False)
        if is_causal:
            _unsupported(
                f"sigmoid attention '{name}': {type(module).__name__} is causal (a decoder); sigcell's "
                "transformers integration supports bidirectional encoders only"
            )
        if getattr(module, "is_cross_attention", False) or getattr(module, "is_cross", False):
            _unsupported(
                f"sigmoid attention '{name}': cross-attention ({type(module).__name__}) is not supported"
            )
        for arg in _UNSUPPORTED_KWARGS:
            if kwargs.get(arg) is not None:
                _unsupported(
                    f"sigmoid attention '{name}': {type(module).__name__} passes `{arg}`, which sigcell's "
                    "kernel cannot honor; this model is not supported"
                )
        if kwargs.get("output_attentions"):
            _fail(
                f"sigmoid attention '{name}' never materializes attention weights; call the model with "
                "output_attentions=False, or switch to attn_implementation='eager' to inspect softmax "
                "weights"
            )
        if dropout and module.training and settings.attention_dropout == "error":
            _fail(
                f"sigmoid attention '{name}': the model asks for attention dropout p={dropout} in "
                "training, which the kernel does not implement; build the model with "
                f"attention_probs_dropout_prob=0.0, or register('{name}', attention_dropout='ignore') to "
                "train without it"
            )
        if query.ndim != 4 or key.ndim != 4:
            _fail(
                f"sigmoid attention '{name}': expected query and key of shape [B, H, L, D], got "
                f"{tuple(query.shape)} and {tuple(key.shape)}"
            )
        batch, heads, q_len, dim = query.shape
        kv_len = key.shape[2]
        if q_len != kv_len:
            _unsupported(
                f"sigmoid attention '{name}': {q_len} queries but {kv_len} keys (cross-attention or a KV "
                "cache); only self-attention of bidirectional encoders is supported"
            )
        lengths = _lengths_from_mask(attention_mask, batch, q_len, kv_len)
        packed = _packed_offsets(kwargs, kwargs.get("position_ids"), batch, q_len)
        if packed is not None and lengths is not None:
            _fail(
                f"sigmoid attention '{name}': got both a padding mask with padded tokens and packed "
                "sequence offsets (cu_seq_lens / restarting position_ids); pass one or the other"
            )

        scale = settings.scale if settings.scale is not None else scaling
        bias: float | torch.Tensor | None = None
        key_bias = None
        if settings.bias == "learned":
            bias = _learned_bias(module, heads, name)
        elif settings.bias is not None:
            bias = float(settings.bias)
        op_kwargs = {"scale": scale, "fast_sigmoid": settings.fast_sigmoid}

        # The op wants [B, L, H, D]; transformers' [B, H, L, D] tensors are usually transposed views of it.
        q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        if packed is None:
            if settings.bias == "learned":
                seq = lengths if lengths is not None else torch.full((batch,), kv_len, device=q.device)
                # Learned per-head offsets on top of -log(n): a fresh (zero) parameter reproduces the default.
                key_bias = _log_length_key_bias(seq, kv_len, packed=False)
            out = sigmoid_attn_func(
                q, k, v, bias=bias, key_bias=key_bias, seq_lens_q=lengths, seq_lens_k=lengths, **op_kwargs
            )
            return out, None

        cu, max_len = packed
        total = batch * q_len
        q, k, v = (t.reshape(total, t.shape[2], dim) for t in (q, k, v))
        if settings.bias == "learned":
            key_bias = _log_length_key_bias(cu[1:] - cu[:-1], total, packed=True)
        out = sigmoid_attn_varlen_func(
            q, k, v, cu, cu, max_len, max_len, bias=bias, key_bias=key_bias, **op_kwargs
        )
        return out.view(batch, q_len, heads, dim), None

    sigmoid_attention_forward.__name__ = f"sigmoid_attention_forward[{settings.name}]"
    return sigmoid_attention_forward


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def register(
    name: str = "sigmoid",
    *,
    bias: BiasSpec = None,
    scale: float | None = None,
    attention_dropout: Literal["error", "ignore"] = "error",
    fast_sigmoid: bool | None = None,
) -> str:
    """Register sigcell's sigmoid attention with transformers under ``attn_implementation=name``.

    Registers both the attention function and the matching mask function (without the latter,
    transformers would pass no padding mask). Registering a name again replaces its settings for every
    model that uses it.

    Parameters
    ----------
    name
        The ``attn_implementation`` string; must not be one of transformers' own (``"sdpa"``, ...).
        Register several names to use different settings side by side.
    bias
        Sigmoid bias added to every score: ``None`` -> ``-log(n)`` with ``n`` the sequence's number of
        valid tokens (padding never changes a result); a float -> that constant; ``"learned"`` -> ``-log(n)``
        plus one trainable offset per head and layer, initialized to 0 (the parameters are added by
        :func:`enable` / :func:`add_learned_bias`).
    scale
        Multiplier of ``q . k``; ``None`` uses the model's own (``1 / sqrt(head_dim)`` for BERT).
    attention_dropout
        The kernel has no dropout on attention weights. ``"error"``: a training forward of a model with
        ``attention_probs_dropout_prob > 0`` raises; ``"ignore"``: such dropout is skipped.
    fast_sigmoid
        Passed to the op: ``None`` uses the hardware ``tanh`` approximation for 16-bit inputs on CUDA.

    Returns
    -------
    str
        ``name``, to pass as ``attn_implementation``.

    Examples
    --------
    >>> register("sigmoid")  # doctest: +SKIP
    >>> model = AutoModelForMaskedLM.from_config(cfg, attn_implementation="sigmoid")  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name or name in _RESERVED_NAMES:
        _fail(
            f"register: name must be a new non-empty string, got {name!r}; transformers' own names "
            f"{sorted(_RESERVED_NAMES)} cannot be replaced"
        )
    if isinstance(bias, str):
        if bias != "learned":
            _fail(f"register: bias must be None (-log n), a finite float, or 'learned', got {bias!r}")
    elif bias is not None and (
        isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias)
    ):
        _fail(f"register: bias must be None (-log n), a finite float, or 'learned', got {bias!r}")
    if scale is not None and (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale <= 0
    ):
        _fail(f"register: scale must be None (the model's own) or a positive finite float, got {scale!r}")
    if attention_dropout not in ("error", "ignore"):
        _fail(f"register: attention_dropout must be 'error' or 'ignore', got {attention_dropout!r}")
    settings = _Settings(
        name=name,
        bias=None if bias is None else (bias if bias == "learned" else float(bias)),
        scale=None if scale is None else float(scale),
        attention_dropout=attention_dropout,
        fast_sigmoid=fast_sigmoid,
    )
    AttentionInterface.register(name, _make_attention_forward(settings))
    AttentionMaskInterface.register(name, sigmoid_mask)
    _REGISTERED[name] = settings
    return name


def check_model(model: nn.Module, *, allow_untested: bool = False) -> None:
    """Raise :class:`UnsupportedModelError` if sigmoid attention cannot be used faithfully in ``model``.

    Checks the class and config (encoder only, no cross-attention, attention through transformers'
    ``AttentionInterface``, model type in :data:`SUPPORTED_MODEL_TYPES` unless ``allow_untested``).
    The attention and mask functions check each call as well (mask pattern, causal flags, cache).

    Parameters
    ----------
    model
        A ``transformers.PreTrainedModel``.
    allow_untested
        Accept model types outside :data:`SUPPORTED_MODEL_TYPES` that pass the other checks.
    """
    if not isinstance(model, PreTrainedModel):
        _unsupported(
            f"sigmoid attention: expected a transformers PreTrainedModel, got {type(model).__name__}; for "
            "sigcell's own models use sigcell.model instead"
        )
    cls = type(model).__name__
    config = model.config
    model_type = getattr(config, "model_type", "?")
    for flag, why in (
        ("is_encoder_decoder", "an encoder-decoder (its decoder is causal and uses cross-attention)"),
        ("is_decoder", "configured as a decoder (causal attention with a KV cache)"),
        ("add_cross_attention", "configured with cross-attention"),
    ):
        if getattr(config, flag, False):
            _unsupported(
                f"sigmoid attention: {cls} ({model_type}) is {why}; sigcell's transformers integration "
                "supports bidirectional self-attention encoders only (e.g. BertForMaskedLM with "
                "is_decoder=False)"
            )
    if not type(model)._can_set_attn_implementation():
        _unsupported(
            f"sigmoid attention: {cls} computes attention itself instead of calling transformers' "
            "AttentionInterface, so a registered attention function would never run"
        )
    if model_type not in SUPPORTED_MODEL_TYPES and not allow_untested:
        _unsupported(
            f"sigmoid attention: model type {model_type!r} ({cls}) is not one sigcell has verified; "
            f"supported: {sorted(SUPPORTED_MODEL_TYPES)}; pass allow_untested=True to try it (the runtime "
            "checks still refuse causal, cross-attention, cache and non-padding masks) and compare with "
            "'sdpa' first"
        )


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """BERT-style attention modules (name, module, heads): those that call the attention interface."""
    found = []
    for mod_name, module in model.named_modules():
        heads = getattr(module, "num_attention_heads", getattr(module, "num_heads", None))
        is_attention = type(module).__name__.endswith("Attention") and hasattr(module, "scaling")
        if is_attention and isinstance(heads, int):
            found.append((mod_name, module, heads))
    return found


def add_learned_bias(model: nn.Module, init: float = 0.0) -> list[str]:
    """Add a trainable per-head sigmoid-bias offset ``sigmoid_bias`` (``[H]``) to each attention module.

    Used with ``register(name, bias="learned")``: the score bias becomes ``-log(n) + offset[h]``. Call it
    before creating the optimizer; modules that already have the parameter keep it. The parameters are
    part of ``state_dict()``; to reload such a checkpoint, build the model, call this, then load.

    Parameters
    ----------
    model
        The transformers model.
    init
        Initial offset; 0 reproduces the default ``-log(n)`` bias exactly.

    Returns
    -------
    list[str]
        Names of the new parameters.
    """
    modules = _attention_modules(model)
    if not modules:
        _unsupported(
            "add_learned_bias: found no BERT-style attention module (class name ending in 'Attention' "
            f"with num_attention_heads and scaling) in {type(model).__name__}"
        )
    added = []
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else None
    for mod_name, module, heads in modules:
        if isinstance(getattr(module, LEARNED_BIAS_NAME, None), nn.Parameter):
            continue
        module.register_parameter(
            LEARNED_BIAS_NAME,
            nn.Parameter(torch.full((heads,), float(init), dtype=torch.float32, device=device)),
        )
        added.append(f"{mod_name}.{LEARNED_BIAS_NAME}" if mod_name else LEARNED_BIAS_NAME)
    return added


def enable(
    model: nn.Module,
    name: str = "sigmoid",
    *,
    bias: BiasSpec = None,
    scale: float | None = None,
    attention_dropout: Literal["error", "ignore"] = "error",
    fast_sigmoid: bool | None = None,
    allow_untested: bool = False,
) -> nn.Module:
    """Switch an existing transformers model to sigmoid attention (in place) and return it.

    Checks the model (:func:`check_model`), registers ``name`` with the given settings (:func:`register`),
    adds the learned bias parameters if ``bias="learned"``, then calls
    ``model.set_attn_implementation(name)``.

    Parameters
    ----------
    model
        A supported ``transformers.PreTrainedModel`` (e.g. ``BertForMaskedLM``).
    name, bias, scale, attention_dropout, fast_sigmoid
        As in :func:`register`.
    allow_untested
        As in :func:`check_model`.

    Returns
    -------
    nn.Module
        ``model``, now with ``config._attn_implementation == name``.
    """
    check_model(model, allow_untested=allow_untested)
    register(name, bias=bias, scale=scale, attention_dropout=attention_dropout, fast_sigmoid=fast_sigmoid)
    if bias == "learned":
        add_learned_bias(model)
    model.set_attn_implementation(name)
    return model
