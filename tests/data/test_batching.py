"""Batching: padded == packed, no cross-cell packing, token budgets, buckets, ranks, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_counts
from sigcell.data import (
    CLS_ID,
    PAD_ID,
    GeneVocab,
    LengthBucketSampler,
    TokenizerConfig,
    collate_packed,
    collate_padded,
    gene_medians,
    iter_batches,
    make_dataloader,
    tokenize,
)
from sigcell.ops.padding import lengths_from_cu_seqlens, unpack_to_padded


def _cells(rng, encoding="binned", n_cells=97, max_genes=40):
    a = random_counts(rng, n_cells, 120, density=float(rng.uniform(0.05, 0.4)))
    vocab = GeneVocab.from_adata(a)
    if encoding == "rank":
        vocab = vocab.with_medians(gene_medians(a)[np.argsort(np.argsort(a.var_names))])
    return tokenize(a, vocab, TokenizerConfig(encoding=encoding, max_genes=max_genes))


@pytest.mark.parametrize("encoding", ["rank", "binned"])
def test_padded_equals_packed(rng, encoding):
    cells = _cells(rng, encoding)
    idx = rng.choice(len(cells), 16, replace=False)
    ids, vals, n = cells.gather(idx)
    padded = collate_padded(ids, vals, n, encoding=encoding, cell_index=idx)
    packed = collate_packed(ids, vals, n, encoding=encoding, cell_index=idx)
    assert padded.values.dtype == (torch.float32 if encoding == "rank" else torch.int64)
    assert padded.seq_lens.dtype == torch.int32 and packed.cu_seqlens.dtype == torch.int32
    assert torch.equal(lengths_from_cu_seqlens(packed.cu_seqlens), padded.seq_lens)
    assert packed.max_seqlen == int(padded.seq_lens.max()) == padded.gene_ids.shape[1]
    assert torch.equal(
        unpack_to_padded(packed.gene_ids, packed.cu_seqlens, packed.max_seqlen), padded.gene_ids
    )
    assert torch.equal(unpack_to_padded(packed.values, packed.cu_seqlens, packed.max_seqlen), padded.values)
    assert torch.equal(padded.cell_index, torch.as_tensor(idx)) and torch.equal(
        packed.cell_index, padded.cell_index
    )
    for b, i in enumerate(idx):  # each row / segment is exactly <cls> + that cell, padding after
        g, v = cells[i]
        L = g.size + 1
        assert padded.gene_ids[b, 0] == CLS_ID and padded.values[b, 0] == 0
        assert padded.gene_ids[b, 1:L].tolist() == g.tolist()
        np.testing.assert_array_equal(padded.values[b, 1:L].numpy(), v.astype(padded.values.numpy().dtype))
        assert (padded.gene_ids[b, L:] == PAD_ID).all() and (padded.values[b, L:] == 0).all()
        a, e = packed.cu_seqlens[b].item(), packed.cu_seqlens[b + 1].item()
        assert packed.gene_ids[a] == CLS_ID and packed.gene_ids[a + 1 : e].tolist() == g.tolist()
    assert (packed.gene_ids == CLS_ID).sum() == len(idx)  # one <cls> per segment: no cell spills over


def test_pad_to_multiple(rng):
    cells = _cells(rng)
    ids, vals, n = cells.gather(np.arange(5))
    batch = collate_padded(ids, vals, n, encoding="binned", pad_to_multiple_of=64)
    assert batch.gene_ids.shape[1] % 64 == 0 and batch.gene_ids.shape[1] >= int(batch.seq_lens.max())


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_token_budget_respected_and_covers_every_cell(rng, layout):
    cells = _cells(rng, n_cells=200)
    budget = int(rng.integers(45, 300))
    loader = make_dataloader(cells, token_budget=budget, layout=layout, seed=int(rng.integers(1000)))
    seen = []
    for batch in loader:
        if layout == "padded":
            assert batch.gene_ids.numel() <= budget
        else:
            assert batch.gene_ids.numel() <= budget and int(batch.cu_seqlens[-1]) == batch.gene_ids.numel()
        seen.extend(batch.cell_index.tolist())
    assert sorted(seen) == list(range(len(cells)))
    with pytest.raises(ValueError, match=r"token_budget 10 is smaller than the longest cell \(\d+ tokens"):
        make_dataloader(cells, token_budget=10)


def test_bucketing_reduces_padding(rng):
    cells = _cells(rng, n_cells=400, max_genes=100)

    def padding(bucket):
        loader = make_dataloader(cells, batch_size=16, bucket=bucket, seed=3)
        return sum(int((b.gene_ids == PAD_ID).sum()) for b in loader)

    assert padding(True) < 0.5 * padding(False)


def test_same_batches_padded_and_packed(rng):
    cells = _cells(rng)
    seed = int(rng.integers(1 << 20))
    pad = list(make_dataloader(cells, batch_size=8, layout="padded", seed=seed))
    pack = list(make_dataloader(cells, batch_size=8, layout="packed", seed=seed))
    assert len(pad) == len(pack)
    for p, q in zip(pad, pack, strict=True):
        assert torch.equal(p.cell_index, q.cell_index)
        assert torch.equal(unpack_to_padded(q.gene_ids, q.cu_seqlens, q.max_seqlen), p.gene_ids)


def _ids(batches):
    return [b.cell_index.tolist() for b in batches]


@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("kw", [{"batch_size": 7}, {"token_budget": 160, "layout": "packed"}])
def test_exact_resume(rng, kw, workers):
    cells = _cells(rng)
    seed = int(rng.integers(1 << 20))
    ref = make_dataloader(cells, seed=seed, **kw)
    epoch0, epoch1 = _ids(ref), _ids(ref)
    assert epoch0 != epoch1
    assert sorted(c for b in epoch0 for c in b) == sorted(c for b in epoch1 for c in b)
    stop = int(rng.integers(1, len(epoch0) - 1))
    # Worker threads collate ahead of the consumer; the state still counts only the batches handed out.
    run = make_dataloader(cells, seed=seed, num_workers=workers, **kw)
    it = iter(run)
    first = [next(it).cell_index.tolist() for _ in range(stop)]
    state = run.state_dict()
    it.close()
    assert run.state_dict() == state  # stopping early drops the batches queued ahead, consumes none
    resumed = make_dataloader(cells, seed=seed, num_workers=workers, **kw)
    resumed.load_state_dict(state)
    assert first + _ids(resumed) == epoch0
    assert _ids(resumed) == epoch1  # and the next epoch matches too
    other = make_dataloader(cells, seed=seed + 1, **kw)
    with pytest.raises(ValueError, match=r"settings changed \(seed: saved \d+, now \d+\)"):
        other.load_state_dict(state)


def test_worker_threads_give_the_same_batches(rng):
    cells = _cells(rng)
    for layout in ("padded", "packed"):
        plain = list(make_dataloader(cells, batch_size=5, layout=layout, seed=3))
        threaded = list(make_dataloader(cells, batch_size=5, layout=layout, seed=3, num_workers=2))
        assert len(plain) == len(threaded)
        for a, b in zip(plain, threaded, strict=True):
            assert torch.equal(a.gene_ids, b.gene_ids) and torch.equal(a.values, b.values)
            assert torch.equal(a.cell_index, b.cell_index)
    with pytest.raises(ValueError, match="num_workers must be a non-negative int"):
        make_dataloader(cells, batch_size=5, num_workers=-1)


def test_ranks_partition_the_batches(rng):
    cells = _cells(rng, n_cells=150)
    world = 3
    per_rank = [
        _ids(make_dataloader(cells, batch_size=5, seed=11, rank=r, world_size=world)) for r in range(world)
    ]
    assert len({len(p) for p in per_rank}) == 1  # same number of steps on every rank
    flat = [c for p in per_rank for b in p for c in b]
    assert len(flat) == len(set(flat)) and len(flat) == 150  # 30 batches of 5: all used, none twice
    with pytest.raises(ValueError, match="need 0 <= rank < world_size, got rank=3"):
        LengthBucketSampler(np.ones(5), batch_size=2, rank=3, world_size=3)


def test_iter_batches_keeps_cell_order(rng):
    a = random_counts(rng, 50, 40, dense=True)
    a.X[[4, 9]] = 0  # no genes: dropped, their rows never appear
    vocab = GeneVocab.from_genes(a.var_names)
    loader = iter_batches(a, vocab, TokenizerConfig(encoding="binned"), batch_size=8, layout="packed")
    order = [i for b in loader for i in b.cell_index.tolist()]
    assert order == [i for i in range(50) if i not in (4, 9)]
    assert loader.cells.stats["n_empty_dropped"] == 2
