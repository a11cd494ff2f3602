"""mask_batch: which positions, what is hidden, reproducibility, padded == packed."""

from __future__ import annotations

import pytest
import torch

from sigcell.data.batch import CellBatch
from sigcell.ops import pack_padded
from sigcell.train.masking import mask_batch
from sigcell.train.synthetic import SyntheticCells


def batch(encoding: str, seed: int, packed: bool) -> CellBatch:
    return SyntheticCells(60, encoding, 9, 1, 30, 3, seed).batch(seed, 7, packed=packed)


@pytest.mark.parametrize("encoding", ["continuous", "binned", "rank"])
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_masks_genes_only_at_the_requested_fraction(encoding, fraction):
    seed = int(fraction * 100) + len(encoding)
    b = batch(encoding, seed, packed=False)
    m = mask_batch(b, fraction, encoding, torch.Generator().manual_seed(seed))
    valid = torch.arange(b.gene_ids.shape[1]) < b.seq_lens.view(-1, 1)
    assert not m.mask[:, 0].any(), "<cls> was masked"
    assert not (m.mask & ~valid).any(), "padding was masked"
    n_genes = b.seq_lens.long() - 1
    expected = torch.where(n_genes > 0, torch.round(n_genes * fraction).clamp(min=1), 0)
    assert torch.equal(m.mask.sum(1), expected.long())
    if encoding == "rank":
        assert bool((m.gene_ids[m.mask] == 2).all())
        assert torch.equal(m.targets[m.mask], b.gene_ids[m.mask])
        assert torch.equal(m.gene_ids[~m.mask], b.gene_ids[~m.mask])
    else:
        assert torch.equal(m.gene_ids, b.gene_ids)
        assert bool((m.values[m.mask] == 0).all())
        assert torch.equal(m.targets[m.mask], b.values[m.mask])
    assert torch.equal(m.values[~m.mask], b.values[~m.mask])


def test_same_generator_seed_same_mask_and_padded_equals_packed():
    pad, pack = batch("binned", 4, packed=False), batch("binned", 4, packed=True)
    m1 = mask_batch(pad, 0.3, "binned", torch.Generator().manual_seed(9))
    m2 = mask_batch(pad, 0.3, "binned", torch.Generator().manual_seed(9))
    m3 = mask_batch(pack, 0.3, "binned", torch.Generator().manual_seed(9))
    m4 = mask_batch(pad, 0.3, "binned", torch.Generator().manual_seed(10))
    assert torch.equal(m1.mask, m2.mask)
    assert torch.equal(pack_padded(m1.mask, m3.cu_seqlens), m3.mask)
    assert not torch.equal(m1.mask, m4.mask)


def test_a_cell_with_only_cls_gets_no_mask():
    b = CellBatch(gene_ids=torch.tensor([1, 1, 5, 6]), values=torch.tensor([0, 0, 3, 4]),
                  cu_seqlens=torch.tensor([0, 1, 4], dtype=torch.int32), max_seqlen=3)
    m = mask_batch(b, 0.5, "binned", torch.Generator().manual_seed(0))
    assert m.mask.tolist()[:2] == [False, False] and int(m.mask.sum()) == 1  # round(2 genes x 0.5)


@pytest.mark.parametrize(("fraction", "encoding", "message"), [
    (0.0, "binned", "fraction must lie in (0, 1)"), (1.0, "binned", "fraction must lie in (0, 1)"),
    (0.2, "bins", "value_encoding must be one of")])
def test_bad_arguments(fraction, encoding, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mask_batch(batch("binned", 0, True), fraction, encoding)
