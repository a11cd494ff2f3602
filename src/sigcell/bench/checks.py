"""A cheap accuracy check of sigcell's entry points before timing them.

On a small problem per head dimension and causal flag, sigcell's output is compared with the plain-PyTorch
path run in float64 (the reference); the same plain path run in the benchmark's dtype gives the error that the
precision alone explains. As in flash-attn's tests, a kernel is fine when its error is at most about twice
that.
"""

from __future__ import annotations

import torch

from sigcell.bench.providers import plain_sigmoid_attention

__all__ = ["accuracy_checks"]


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((x.double() - ref).norm() / ref.norm().clamp(min=1e-30))


def accuracy_checks(device: torch.device, dtype: torch.dtype, head_dims: list[int], causal_flags: list[bool],
                    *, seed: int = 0, seq_len: int | None = None) -> list[dict]:
    """Relative error of sigcell's dense, padded and varlen calls against a float64 reference.

    Parameters
    ----------
    device, dtype
        Where and in which precision the benchmark runs.
    head_dims, causal_flags
        One check per combination.
    seed
        Seed of the inputs.
    seq_len
        Length of the padded batch (default 256 on CUDA, 48 on the CPU); the batch has two sequences, one full
        and one about 3/4 long, and two heads.

    Returns
    -------
    One dict per (D, causal, entry point): ``rel_err``, ``baseline_rel_err`` (plain PyTorch in ``dtype``),
    ``ok`` (``rel_err <= 2 * baseline + 1e-4``).
    """
    from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func
    from sigcell.ops import cu_seqlens_from_lengths, pack_padded, unpack_to_padded

    seq = seq_len or (256 if device.type == "cuda" else 48)
    lengths = (seq, (3 * seq) // 4 + 1)
    lens = torch.tensor(lengths, dtype=torch.int32, device=device)
    cu = cu_seqlens_from_lengths(lens)
    checks = []
    for d in head_dims:
        for causal in causal_flags:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed + d + 7 * int(causal))
            q, k, v = (torch.randn(2, seq, 2, d, device=device, generator=gen).to(dtype) for _ in range(3))
            with torch.no_grad():
                ref = plain_sigmoid_attention(q.double(), k.double(), v.double(), lens, causal=causal)
                base = plain_sigmoid_attention(q, k, v, lens, causal=causal)
                padded = sigmoid_attn_func(q, k, v, causal=causal, seq_lens_q=lens, seq_lens_k=lens)
                outs = {
                    "sigcell-padded": padded,
                    "sigcell-varlen": unpack_to_padded(
                        sigmoid_attn_varlen_func(pack_padded(q, cu), pack_padded(k, cu), pack_padded(v, cu),
                                                 cu, cu, seq, seq, causal=causal), cu, seq),
                }
                # The dense call sees only the first (full-length) sequence.
                dense = sigmoid_attn_func(q[:1], k[:1], v[:1], causal=causal)
            baseline = _rel_err(base, ref)
            for name, out in outs.items():
                err = _rel_err(out, ref)
                checks.append({"D": d, "causal": causal, "provider": name, "rel_err": err,
                               "baseline_rel_err": baseline, "ok": err <= 2 * baseline + 1e-4})
            err, baseline = _rel_err(dense, ref[:1]), _rel_err(base[:1], ref[:1])
            checks.append({"D": d, "causal": causal, "provider": "sigcell-dense", "rel_err": err,
                           "baseline_rel_err": baseline, "ok": err <= 2 * baseline + 1e-4})
    return checks
