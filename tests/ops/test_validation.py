"""Every invalid input gets one clear ValueError that names the problem and the fix."""

from __future__ import annotations

import pytest
import torch

from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func


def qkv(b=2, lq=5, lk=5, h=4, hkv=2, d=8, dtype=torch.float32):
    return (
        torch.randn(b, lq, h, d, dtype=dtype),
        torch.randn(b, lk, hkv, d, dtype=dtype),
        torch.randn(b, lk, hkv, d, dtype=dtype),
    )


def packed(t=7, h=4, hkv=2, d=8):
    return torch.randn(t, h, d), torch.randn(t, hkv, d), torch.randn(t, hkv, d)


CU = torch.tensor([0, 3, 7], dtype=torch.int32)
I32 = torch.int32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sigmoid_attn_func(torch.randn(2, 5, 8), *qkv()[1:]),
            r"q must have 4 dimensions \[B, L, H, D\]",
        ),
        (
            lambda: sigmoid_attn_func(*qkv()[:2], torch.randn(2, 5, 2, 8, dtype=torch.float16)),
            "must share one dtype",
        ),
        (lambda: sigmoid_attn_func(*(t.to(torch.int32) for t in qkv())), "supported are bfloat16, float16"),
        (lambda: sigmoid_attn_func(qkv()[0], qkv()[1], torch.randn(2, 6, 2, 8)), "same shape"),
        (lambda: sigmoid_attn_func(*qkv(h=3, hkv=2)), r"multiple of the number of KV heads"),
        (lambda: sigmoid_attn_func(*qkv(d=300)), r"head dim 300 is not supported; sigcell supports 1..256"),
        (
            lambda: sigmoid_attn_func(qkv()[0], torch.randn(2, 5, 2, 16), torch.randn(2, 5, 2, 16)),
            "share the head dim",
        ),
        (lambda: sigmoid_attn_func(qkv()[0], *qkv(b=3)[1:]), "same batch size"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_q=torch.tensor([1, 2])), "must have dtype torch.int32"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_q=torch.tensor([1, 2, 3], dtype=I32)), r"shape \[2\]"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_k=torch.tensor([1, 6], dtype=I32)), r"lie in \[0, 5\]"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_k=torch.tensor([-1, 2], dtype=I32)), r"lie in \[0, 5\]"),
        (lambda: sigmoid_attn_func(*qkv(), bias=torch.zeros(3)), r"shape \[H\] = \[4\]"),
        (lambda: sigmoid_attn_func(*qkv(), bias=float("nan")), "bias must be None"),
        (lambda: sigmoid_attn_func(*qkv(), bias="learned"), "bias must be None"),
        (
            lambda: sigmoid_attn_func(*qkv(), key_bias=torch.zeros(2, 4)),
            r"key_bias must have shape \[B, Lk\]",
        ),
        (lambda: sigmoid_attn_func(*qkv(), key_bias=torch.zeros(2, 5, dtype=torch.int64)), "floating-point"),
        (lambda: sigmoid_attn_func(*qkv(), alibi_slopes=torch.zeros(3)), "alibi_slopes must be a tensor"),
        (lambda: sigmoid_attn_func(*qkv(), scale=float("inf")), "scale must be a finite float"),
        (lambda: sigmoid_attn_varlen_func(*qkv(), CU, CU, 4, 4), r"q must have 3 dimensions \[T, H, D\]"),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU.long(), CU, 4, 4),
            "cu_seqlens_q must have dtype torch.int32",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), torch.tensor([1, 3, 7], dtype=I32), CU, 4, 4),
            "cu_seqlens_q must start at 0",
        ),
        (
            lambda: sigmoid_attn_varlen_func(
                *packed(), torch.tensor([0, 5, 3, 7], dtype=I32), torch.tensor([0, 2, 3, 7], dtype=I32), 5, 5
            ),
            "non-decreasing",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), torch.tensor([0, 3, 6], dtype=I32), CU, 4, 4),
            r"must end at the number of packed tokens \(7\)",
        ),
        (lambda: sigmoid_attn_varlen_func(*packed(), CU, CU, 3, 4), "longest sequence has 4 tokens"),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU, torch.tensor([0, 7], dtype=I32), 4, 7),
            "same number of sequences",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU, CU, -1, 4),
            "max_seqlen_q must be a non-negative int",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU, CU, 4, 4, key_bias=torch.zeros(6)),
            r"key_bias must have shape \[Tk\] = \[7\]",
        ),
        (lambda: sigmoid_attn_varlen_func(*packed(), CU.view(1, -1), CU, 4, 4), "1-D int32 tensor"),
    ],
)
def test_invalid_input_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_values_are_caught_again_after_an_in_place_change():
    q, k, v = qkv()
    lens = torch.tensor([5, 5], dtype=I32)
    sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens)  # passes and is remembered
    lens[1] = 9
    with pytest.raises(ValueError, match=r"lie in \[0, 5\]"):
        sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens)


def test_a_bad_tensor_fails_every_time():
    q, k, v = qkv()
    lens = torch.tensor([5, 7], dtype=I32)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"lie in \[0, 5\]"):
            sigmoid_attn_func(q, k, v, seq_lens_q=lens)


def test_lengths_changed_in_place_give_new_results():
    """Lengths and the default bias derived from a lengths / offsets tensor are remembered per tensor:
    an in-place change must be seen (the same result as a fresh tensor with the new values)."""
    torch.manual_seed(0)
    q, k, v = packed()
    cu = torch.tensor([0, 3, 7], dtype=I32)
    sigmoid_attn_varlen_func(q, k, v, cu, cu, 4, 4)
    cu[1] = 5
    got = sigmoid_attn_varlen_func(q, k, v, cu, cu, 5, 5)
    want = sigmoid_attn_varlen_func(q, k, v, cu.clone(), cu.clone(), 5, 5)
    torch.testing.assert_close(got, want, rtol=0, atol=0)

    qd, kd, vd = qkv()
    lens = torch.tensor([5, 2], dtype=I32)
    sigmoid_attn_func(qd, kd, vd, seq_lens_q=lens, seq_lens_k=lens)
    lens[1] = 4
    got = sigmoid_attn_func(qd, kd, vd, seq_lens_q=lens, seq_lens_k=lens)
    want = sigmoid_attn_func(qd, kd, vd, seq_lens_q=lens.clone(), seq_lens_k=lens.clone())
    torch.testing.assert_close(got, want, rtol=0, atol=0)
