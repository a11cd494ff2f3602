"""Exact Jacobians of attention: weights w.r.t. logits (closed form) and a layer's output w.r.t. its input.

For one query row with logits ``s`` (length ``L``, one per key):

* softmax, ``p = softmax(s)``: ``dp/ds = diag(p) - p p^T``. Every weight depends on every logit; each row
  of the Jacobian carries exactly as much absolute mass off the diagonal as on it
  (``sum_{j != i} p_i p_j = p_i (1 - p_i)``), so the off-diagonal fraction is 1/2 whatever ``s`` is.
* sigmoid, ``p = sigma(s + b)``: ``dp/ds = diag(sigma'(s + b))`` with ``sigma' = sigma (1 - sigma) <= 1/4``:
  each weight depends on its own logit only.

The Jacobian of the whole ``[L, L]`` weight matrix w.r.t. the ``[L, L]`` logits is block-diagonal over
query rows, so per-row metrics are exact: its spectral norm is the largest row block's.

The layer Jacobian (attention sub-layer output ``[L, d]`` w.r.t. its input ``[L, d]``, projections
included) has no such closed form; it is computed with ``torch.func.jacrev`` for small ``L``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "attention_layer_fn",
    "attention_weight_jacobian",
    "autograd_weight_jacobian",
    "jacobian_metrics",
    "layer_jacobian",
    "layer_jacobian_metrics",
    "row_metrics",
    "sigmoid_jacobian",
    "softmax_jacobian",
    "softmax_spectral_norm",
    "spectral_norm",
    "sweep_layer",
    "sweep_weights",
]

KINDS = ("softmax", "sigmoid")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        msg = f"attention kind must be 'softmax' or 'sigmoid', got {kind!r}"
        raise ValueError(msg)


def softmax_jacobian(s: torch.Tensor) -> torch.Tensor:
    """Closed-form Jacobian of ``softmax(s)`` over the last axis: ``diag(p) - p p^T`` per row.

    Shapes
    ------
    s: ``[..., L]`` -> returns ``[..., L, L]`` with ``J[..., i, j] = d p_i / d s_j``.
    """
    p = torch.softmax(s, dim=-1)
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


def sigmoid_jacobian(s: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
    """Closed-form Jacobian of ``sigmoid(s + bias)`` elementwise: ``diag(sigma'(s + bias))``.

    Shapes
    ------
    s: ``[..., L]`` -> returns ``[..., L, L]`` (diagonal; every entry <= 1/4).
    """
    sig = torch.sigmoid(s + bias)
    return torch.diag_embed(sig * (1.0 - sig))


def attention_weight_jacobian(s: torch.Tensor, kind: str, bias: float = 0.0) -> torch.Tensor:
    """``softmax_jacobian(s)`` or ``sigmoid_jacobian(s, bias)`` (``bias`` is ignored by softmax)."""
    _check_kind(kind)
    return softmax_jacobian(s) if kind == "softmax" else sigmoid_jacobian(s, bias)


def autograd_weight_jacobian(s: torch.Tensor, kind: str, bias: float = 0.0) -> torch.Tensor:
    """The same Jacobian by autograd (``torch.func.jacrev`` vmapped over rows), to check the closed forms.

    Shapes
    ------
    s: ``[R, L]`` -> returns ``[R, L, L]``.
    """
    _check_kind(kind)
    def fn(row: torch.Tensor) -> torch.Tensor:
        return torch.softmax(row, -1) if kind == "softmax" else torch.sigmoid(row + bias)

    return torch.func.vmap(torch.func.jacrev(fn))(s)


def softmax_spectral_norm(p: torch.Tensor, iters: int = 80) -> torch.Tensor:
    """Largest eigenvalue of ``diag(p) - p p^T`` per row, without forming the ``L x L`` matrix.

    The matrix is positive semi-definite and a rank-one downdate of ``diag(p)``, so its largest eigenvalue
    lies between the two largest ``p`` and solves ``sum_i p_i^2 / (p_i - lam) = 1`` (the secular equation);
    the left side increases in ``lam`` there, so bisection finds it. Exact up to float64 rounding,
    ``O(L)`` memory per row.

    Shapes
    ------
    p: ``[..., L]`` probabilities (rows summing to 1) -> returns ``[...]`` (float64).
    """
    p = p.double()
    top = torch.topk(p, k=min(2, p.shape[-1]), dim=-1).values
    hi = top[..., 0]
    lo = top[..., 1] if p.shape[-1] > 1 else torch.zeros_like(hi)
    tied = (hi - lo) <= 1e-15 * hi.clamp(min=1e-300)
    a, b = lo.clone(), hi.clone()
    for _ in range(iters):
        mid = 0.5 * (a + b)
        g = (p.pow(2) / (p - mid.unsqueeze(-1))).sum(-1)
        below = g < 1.0  # the root lies above mid
        a = torch.where(below, mid, a)
        b = torch.where(below, b, mid)
    return torch.where(tied, hi, 0.5 * (a + b))


def jacobian_metrics(J: torch.Tensor) -> dict[str, float]:
    """Metrics of (a batch of) square Jacobians ``[..., n, n]``.

    Returns
    -------
    dict with ``max_abs`` (largest |entry|), ``offdiag_mass`` (summed |entries| off the diagonal, mean
    over the matrices: for a query row's weight Jacobian, its total cross-key coupling),
    ``offdiag_fraction`` (off-diagonal share of the total |mass|) and
    ``spectral_norm`` (largest singular value over the batch: the norm of the block-diagonal whole).
    """
    n = J.shape[-1]
    if J.dim() < 2 or J.shape[-2] != n:
        msg = f"jacobian_metrics: expected square matrices [..., n, n], got shape {tuple(J.shape)}"
        raise ValueError(msg)
    mats = J.detach().reshape(-1, n, n).double()
    absj = mats.abs()
    diag = torch.diagonal(absj, dim1=-2, dim2=-1)
    off = absj.sum(-1) - diag  # [M, n] per row
    total = absj.sum()
    return {"max_abs": float(absj.max()), "offdiag_mass": float(off.sum(-1).mean()),
            "offdiag_fraction": float(off.sum() / total) if total > 0 else 0.0,
            "spectral_norm": float(torch.linalg.matrix_norm(mats, ord=2).max())}


def row_metrics(s: torch.Tensor, kind: str, bias: float = 0.0) -> dict[str, float]:
    """:func:`jacobian_metrics` of the weight Jacobians of rows ``s`` ``[R, L]`` without forming them.

    Uses the closed forms (softmax: ``max_abs = max(max_i p_i (1 - p_i), p_(1) p_(2))``, off-diagonal mass
    ``1 - sum p^2``, spectral norm by :func:`softmax_spectral_norm`; sigmoid: the diagonal ``sigma'``), so
    long rows cost ``O(R L)``.
    """
    _check_kind(kind)
    s = s.double()
    if kind == "sigmoid":
        sig = torch.sigmoid(s + bias)
        d = sig * (1 - sig)
        return {"max_abs": float(d.max()), "offdiag_mass": 0.0, "offdiag_fraction": 0.0,
                "spectral_norm": float(d.max())}
    p = torch.softmax(s, -1)
    diag = p * (1 - p)
    top = torch.topk(p, k=min(2, p.shape[-1]), dim=-1).values
    cross = top[..., 0] * top[..., 1] if p.shape[-1] > 1 else torch.zeros_like(top[..., 0])
    off = 1.0 - p.pow(2).sum(-1)  # per row: sum_i p_i (1 - p_i)
    total = (diag.sum(-1) + off).sum()
    max_abs = torch.maximum(diag.max(-1).values, cross).max()
    return {"max_abs": float(max_abs), "offdiag_mass": float(off.mean()),
            "offdiag_fraction": float(off.sum() / total) if total > 0 else 0.0,
            "spectral_norm": float(softmax_spectral_norm(p).max())}


def sweep_weights(lengths: Sequence[int], scales: Sequence[float], *, rows: int = 64, seed: int = 0,
                  sigmoid_bias: str = "neg_log_n", check_max_len: int = 256) -> dict[str, Any]:
    """Weight-Jacobian metrics for random logits over sequence lengths and logit scales.

    Logits of each query row are ``scale * N(0, 1)`` (the same draw for both kinds). The sigmoid bias is
    ``-log L`` (``"neg_log_n"``, sigcell's default) or 0 (``"zero"``). For ``L <= check_max_len`` the
    closed forms are also compared against autograd.

    Returns
    -------
    ``{"rows": [{"kind", "length", "scale", "max_abs", "offdiag_mass", "offdiag_fraction",
    "spectral_norm"}...], "checks": [{"kind", "length", "scale", "max_err"}...]}``.
    """
    _validate_grid(lengths, scales)
    if sigmoid_bias not in ("neg_log_n", "zero"):
        msg = f"sigmoid_bias must be 'neg_log_n' or 'zero', got {sigmoid_bias!r}"
        raise ValueError(msg)
    gen = torch.Generator().manual_seed(seed)
    out_rows, checks = [], []
    for L in lengths:
        base = torch.randn(rows, L, generator=gen, dtype=torch.float64)
        bias = -math.log(L) if sigmoid_bias == "neg_log_n" else 0.0
        for scale in scales:
            s = base * scale
            for kind in KINDS:
                out_rows.append({"kind": kind, "length": L, "scale": scale, **row_metrics(s, kind, bias)})
                if check_max_len >= L:
                    sub = s[: min(rows, 8)]
                    err = (attention_weight_jacobian(sub, kind, bias)
                           - autograd_weight_jacobian(sub, kind, bias)).abs().max()
                    checks.append({"kind": kind, "length": L, "scale": scale, "max_err": float(err)})
    return {"rows": out_rows, "checks": checks, "sigmoid_bias": sigmoid_bias, "rows_per_point": rows}


# ---------------------------------------------------------------------------------------------------------
def attention_layer_fn(attn: torch.nn.Module, kind: str | None = None,
                       logit_scale: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attention sub-layer of a block as a pure function of one cell's tokens.

    Uses the module's projections, QK-norm, learned sigmoid bias (or ``-log L``) and gate; per-gene key
    biases are not applied. ``kind`` overrides the module's attention (fresh models share weights across
    kinds); ``logit_scale`` multiplies the logits before the bias (a temperature sweep).

    Shapes
    ------
    returns ``f(x)``: ``[L, d_model]`` -> ``[L, d_model]``.
    """
    kind = kind or attn.kind
    _check_kind(kind)
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim

    def f(x: torch.Tensor) -> torch.Tensor:
        L = x.shape[0]
        q, k, v = attn.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k, v = q.reshape(L, H, D), k.reshape(L, Hkv, D), v.reshape(L, Hkv, D)
        if attn.q_norm is not None:
            q, k = attn.q_norm(q), attn.k_norm(k)
        if Hkv != H:
            k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, k) * (attn.scale * logit_scale)  # [H, L, L]
        if kind == "softmax":
            p = torch.softmax(s, -1)
        else:
            bias = attn.bias.view(-1, 1, 1) if getattr(attn, "bias", None) is not None else -math.log(L)
            p = torch.sigmoid(s + bias)
        o = torch.einsum("hqk,khd->qhd", p, v).reshape(L, H * D)
        if attn.gate is not None:
            o = o * torch.sigmoid(attn.gate(x))
        return attn.out(o)

    return f


def layer_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``d fn(x) / d x`` by ``torch.func.jacrev``.

    Shapes
    ------
    x: ``[L, d]`` -> returns ``[L, d, L, d]`` (output token, channel, input token, channel).
    """
    return torch.func.jacrev(fn)(x)


def layer_jacobian_metrics(J: torch.Tensor) -> dict[str, float]:
    """Metrics of a layer Jacobian ``[L, d, L, d]``.

    Returns
    -------
    ``max_abs``, ``offdiag_fraction`` (share of the total |mass| in blocks coupling different tokens),
    ``offdiag_mass`` (mean over output tokens of the summed |entries| of their cross-token blocks, per
    output channel), ``spectral_norm`` (of the ``[L d, L d]`` matrix).
    """
    if J.dim() != 4 or J.shape[:2] != J.shape[2:]:
        msg = f"layer_jacobian_metrics: expected [L, d, L, d], got shape {tuple(J.shape)}"
        raise ValueError(msg)
    L, d = J.shape[:2]
    J = J.detach()
    absj = J.double().abs()
    per_pair = absj.sum(dim=(1, 3))  # [L_out, L_in]
    diag = torch.diagonal(per_pair).sum()
    total = per_pair.sum()
    off = total - diag
    mat = J.reshape(L * d, L * d).double()
    return {"max_abs": float(absj.max()), "offdiag_fraction": float(off / total) if total > 0 else 0.0,
            "offdiag_mass": float(off / (L * d)), "spectral_norm": spectral_norm(mat)}


def spectral_norm(mat: torch.Tensor, tol: float = 1e-10, max_iters: int = 5000, seed: int = 0) -> float:
    """Largest singular value of a square or rectangular matrix by power iteration on ``M^T M``.

    A full SVD of a ``[L d, L d]`` layer Jacobian costs ``O((L d)^3)`` (about a minute at 2048 on a
    CPU core); the power iteration needs only matrix-vector products and stops when the estimate
    changes by less than ``tol`` (relative).
    """
    m = mat.double()
    v = torch.randn(m.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(max_iters):
        w = m.T @ (m @ v)
        norm = float(w.norm())
        if norm == 0.0:
            return 0.0
        v = w / norm
        new = norm ** 0.5
        if abs(new - sigma) <= tol * new:
            return new
        sigma = new
    return sigma


def sweep_layer(layers: Sequence[tuple[str, torch.nn.Module]], kinds: Sequence[str | None],
                lengths: Sequence[int], scales: Sequence[float], *, seed: int = 0) -> list[dict[str, Any]]:
    """Layer-Jacobian metrics for each (layer, kind, length, scale) on the same random inputs.

    Parameters
    ----------
    layers
        ``(name, Attention module)`` pairs.
    kinds
        Attention kinds to evaluate each layer with (``None`` = the layer's own).
    lengths, scales
        Tokens per cell and logit multipliers; inputs are ``N(0, 1)`` tokens, as a pre-norm block feeds
        its attention unit-RMS states.

    Returns
    -------
    One dict per point: ``layer``, ``kind``, ``length``, ``scale`` and :func:`layer_jacobian_metrics`.
    """
    _validate_grid(lengths, scales)
    out = []
    gen = torch.Generator().manual_seed(seed)
    for name, attn in layers:
        d = attn.qkv.in_features
        inputs = {L: torch.randn(L, d, generator=gen) for L in lengths}
        for kind in kinds:
            for L in lengths:
                for scale in scales:
                    with torch.enable_grad():
                        J = layer_jacobian(attention_layer_fn(attn, kind, scale), inputs[L])
                    out.append({"layer": name, "kind": kind or attn.kind, "length": L, "scale": scale,
                                **layer_jacobian_metrics(J.detach())})
    return out


def _validate_grid(lengths: Sequence[int], scales: Sequence[float]) -> None:
    if not lengths or any(not isinstance(n, int) or isinstance(n, bool) or n < 2 for n in lengths):
        msg = f"lengths must be integers >= 2, got {list(lengths)!r}"
        raise ValueError(msg)
    if not scales or any(not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0 for c in scales):
        msg = f"logit scales must be finite numbers > 0, got {list(scales)!r}"
        raise ValueError(msg)


def markdown_tables(weights: dict[str, Any], layer_rows: list[dict[str, Any]]) -> str:
    """The sweep results as Markdown tables (one row per length x scale, softmax | sigmoid columns)."""
    lines = ["## Attention weights w.r.t. logits (closed form)", "",
             f"Logits `scale * N(0,1)`, {weights['rows_per_point']} query rows per point; sigmoid bias "
             f"`{weights['sigmoid_bias']}`. Spectral norm = largest over rows (block-diagonal Jacobian).", "",
             "| L | scale | max abs (softmax / sigmoid) | off-diag fraction | off-diag mass per row "
             "| spectral norm |", "|---:|---:|---|---|---|---|"]
    by = {(r["kind"], r["length"], r["scale"]): r for r in weights["rows"]}
    for (kind, L, scale), r in by.items():
        if kind != "softmax":
            continue
        g = by[("sigmoid", L, scale)]
        lines.append(f"| {L} | {scale:g} | {r['max_abs']:.3g} / {g['max_abs']:.3g} | "
                     f"{r['offdiag_fraction']:.3g} / {g['offdiag_fraction']:.3g} | "
                     f"{r['offdiag_mass']:.3g} / {g['offdiag_mass']:.3g} | "
                     f"{r['spectral_norm']:.3g} / {g['spectral_norm']:.3g} |")
    if weights["checks"]:
        worst = max(c["max_err"] for c in weights["checks"])
        lines += ["", f"Closed forms vs autograd: {len(weights['checks'])} points, largest |difference| "
                      f"{worst:.2e} (float64)."]
    if layer_rows:
        lines += ["", "## Attention sub-layer output w.r.t. its input (autograd, `torch.func.jacrev`)", "",
                  "| layer | kind | L | scale | max abs | off-diag (cross-token) fraction | spectral norm |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in layer_rows:
            lines.append(f"| {r['layer']} | {r['kind']} | {r['length']} | {r['scale']:g} | "
                         f"{r['max_abs']:.3g} | "
                         f"{r['offdiag_fraction']:.3g} | {r['spectral_norm']:.3g} |")
    return "\n".join(lines) + "\n"
