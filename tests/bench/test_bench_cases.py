"""FLOP counting, length draws, presets and provider selection of the kernel benchmark."""

import pytest
import torch

from sigcell.bench.cases import PRESETS, attention_flops, build_cases, paper_batch_heads, uniform_lengths
from sigcell.bench.cell_lengths import CELL_LENGTH_QUANTILES, sample_cell_lengths
from sigcell.bench.providers import PROVIDERS, resolve_providers


@pytest.mark.parametrize(
    ("lengths", "heads", "dim", "causal", "mode", "expected"),
    [
        ([4], 2, 8, False, "fwd", 4 * 2 * 8 * 16),
        ([4], 2, 8, True, "fwd", 4 * 2 * 8 * 16 / 2),
        ([4], 2, 8, False, "bwd", 2.5 * 4 * 2 * 8 * 16),
        ([4], 2, 8, True, "fwd+bwd", 3.5 * 4 * 2 * 8 * 16 / 2),
        # padded batch: only valid tokens count, per sequence squared (not (sum L)^2, not B * L^2)
        ([3, 5], 1, 1, False, "fwd", 4 * (9 + 25)),
        ([3, 5], 3, 4, True, "bwd", 2.5 * 4 * 3 * 4 * (9 + 25) / 2),
    ],
)
def test_attention_flops_known_cases(lengths, heads, dim, causal, mode, expected):
    assert attention_flops(lengths, heads, dim, causal=causal, mode=mode) == expected


def test_flops_reproduce_the_reference_peer_numbers():
    # peers-h200-2026-11-26.json: tritonsigmoid-dense D128 L1024 (B16 H16) fwd 0.4004 ms = 343.3 TFLOPS,
    # bwd 1.0679 ms = 321.7 TFLOPS; sdpa-cudnn D64 L16384 (B1 H32) fwd 4.9001 ms = 448.8 TFLOPS.
    for d, seq, mode, ms, tflops in [(128, 1024, "fwd", 0.4004, 343.3), (128, 1024, "bwd", 1.0679, 321.7),
                                     (64, 16384, "fwd", 4.9001, 448.8)]:
        b, h = paper_batch_heads(seq, d)
        flops = attention_flops([seq] * b, h, d, causal=False, mode=mode)
        assert flops / (ms * 1e-3) / 1e12 == pytest.approx(tflops, rel=2e-3)


def test_flops_reject_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        attention_flops([4], 1, 1, causal=False, mode="forward")


def test_uniform_lengths_bounds_and_seed():
    lens = uniform_lengths(64, 1000, 0.25, seed=3)
    assert all(750 <= n <= 1000 for n in lens)
    assert len(set(lens)) > 10
    assert lens == uniform_lengths(64, 1000, 0.25, seed=3)
    assert lens != uniform_lengths(64, 1000, 0.25, seed=4)
    assert uniform_lengths(5, 77, 0.0, seed=1) == [77] * 5
    with pytest.raises(ValueError, match="padding"):
        uniform_lengths(4, 10, 1.0, seed=0)


def test_cell_lengths_follow_the_table_and_clip():
    table = CELL_LENGTH_QUANTILES["celltypist"]
    lens = sample_cell_lengths(400, 100_000, seed=1)
    assert sorted(lens)[200] == pytest.approx(table[10], rel=0.02)  # the median
    assert min(lens) >= table[0] and max(lens) <= table[-1]
    clipped = sample_cell_lengths(400, 1024, seed=1)
    assert max(clipped) == 1024 and sum(n == 1024 for n in clipped) > 150  # about half the cells are longer
    scaled = sample_cell_lengths(400, 100_000, seed=1, scale=2.0)
    assert sorted(scaled)[200] == pytest.approx(2 * table[10], rel=0.02)
    with pytest.raises(ValueError, match="unknown cell-length"):
        sample_cell_lengths(4, 10, dist="nope")


def test_presets_follow_the_paper_convention():
    cases = build_cases(PRESETS["paper"].head_dims, PRESETS["paper"].seq_lens, PRESETS["paper"].paddings)
    assert len(cases) == 12
    for c in cases:
        assert c.batch * c.seq_len == 16384 and c.heads * c.head_dim == 2048
        assert c.is_padded == (c.padding > 0)
    labels = {c.label for c in cases}
    assert "D128 L4096 p25" in labels and "D64 L16384" in labels
    full = PRESETS["full"]
    assert len(build_cases(full.head_dims, full.seq_lens, full.paddings, full.causal)) == 3 * 6 * 3 * 2
    cells = build_cases((64,), (2048,), cell_dist="celltypist", tokens=65536)
    assert cells[0].batch == 32 and cells[0].lengths_source == "cells:celltypist"
    assert 0 < cells[0].padding < 1 and max(cells[0].lengths) <= 2048


def test_case_rejects_inconsistent_lengths():
    from sigcell.bench.cases import Case

    with pytest.raises(ValueError, match="one length per sequence"):
        Case(16, 8, 2, 1, 0.0, False, (8,))
    with pytest.raises(ValueError, match="every length"):
        Case(16, 8, 1, 1, 0.0, False, (9,))


def test_resolve_providers_groups_and_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    default_cpu = {p.name for p in resolve_providers(["default"], cpu)}
    default_cuda = {p.name for p in resolve_providers(["default"], cuda)}
    assert "sdpa-math" in default_cpu and "sdpa-math" not in default_cuda
    assert "flex" not in default_cuda and "sdpa-cudnn" in default_cuda
    names = [p.name for p in resolve_providers(["sdpa", "sigcell-dense"], cpu, exclude=["sdpa-math"])]
    assert names == ["sigcell-dense", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient"]
    with pytest.raises(ValueError, match="unknown provider 'sdpa-fast'"):
        resolve_providers(["sdpa-fast"], cpu)
    with pytest.raises(ValueError, match="no provider left"):
        resolve_providers(["sigcell"], cpu, exclude=["sigcell"])


def test_unavailable_providers_say_why_on_cpu():
    cpu = torch.device("cpu")
    for name in ("tritonsigmoid-dense", "tritonsigmoid-padded", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient",
                 "flex"):
        reason = PROVIDERS[name].unavailable(cpu)
        assert reason and "CUDA" in reason, name
    for name in ("sigcell-dense", "sigcell-padded", "sigcell-varlen", "sdpa-math", "torch-sigmoid"):
        assert PROVIDERS[name].unavailable(cpu) is None, name


def test_dense_only_providers_skip_padded_cases():
    dense, padded = build_cases((16,), (8,), (0.0, 0.5), seed=0, tokens=32)
    assert padded.is_padded
    assert PROVIDERS["sigcell-dense"].applies(dense) and not PROVIDERS["sigcell-dense"].applies(padded)
    ts_padded = PROVIDERS["tritonsigmoid-padded"]
    assert ts_padded.applies(padded) and not ts_padded.applies(dense)
    assert all(4 <= n <= 8 for n in padded.lengths) and padded.valid_tokens < padded.batch * padded.seq_len
