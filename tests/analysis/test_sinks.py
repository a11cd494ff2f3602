"""The sink metric on constructed attention maps, and on a fresh model."""

import pytest
import torch

from sigcell.analysis.sinks import analyze_encoder, first_token_shares, position_profile, sink_rate
from sigcell.model import CellEncoder, ModelConfig
from sigcell.train import SyntheticCells


def _maps(lengths: list[int], width: int, scale_sigmoid: float | None = None) -> torch.Tensor:
    """Head 0: every query puts all its mass on token 0; head 1: uniform over the cell."""
    B = len(lengths)
    attn = torch.zeros(B, 2, width, width)
    for b, n in enumerate(lengths):
        attn[b, 0, :n, 0] = 1.0
        attn[b, 1, :n, :n] = 1.0 / n
    if scale_sigmoid is not None:  # sigmoid-like rows: any positive mass, same proportions
        attn = attn * scale_sigmoid
    return attn


@pytest.mark.parametrize("lengths", [[8, 8], [5, 8, 3]])
def test_known_sink_head_and_uniform_head(lengths):
    stats = first_token_shares(_maps(lengths, 8), torch.tensor(lengths))
    assert stats["share"][0].item() == pytest.approx(1.0)
    expected_uniform = sum(1.0 / n for n in lengths) / len(lengths)  # per cell, then over cells
    assert stats["share"][1].item() == pytest.approx(expected_uniform)
    assert stats["uniform"][0].item() == pytest.approx(expected_uniform)
    torch.testing.assert_close(stats["row_mass"], torch.ones(2, dtype=torch.float64))
    assert sink_rate(stats["share"].view(1, 2), 0.3) == 0.5


def test_sigmoid_rows_are_normalized_and_raw_mass_is_kept():
    lengths = torch.tensor([6, 4])
    stats = first_token_shares(_maps([6, 4], 6, scale_sigmoid=0.1), lengths)
    assert stats["share"][0].item() == pytest.approx(1.0)  # normalization removes the 0.1
    assert stats["raw"][0].item() == pytest.approx(0.1)
    assert stats["row_mass"][0].item() == pytest.approx(0.1)
    shares = torch.stack([stats["share"], stats["raw"]])
    assert sink_rate(shares[:1].view(1, 2), 0.3) == 0.5 and sink_rate(shares[1:].view(1, 2), 0.3) == 0.0


def test_padding_is_ignored():
    maps = _maps([3], 6)
    maps[0, :, 3:, :] = 123.0  # garbage in padded query rows must not count
    stats = first_token_shares(maps, torch.tensor([3]))
    assert stats["share"].tolist() == pytest.approx([1.0, 1 / 3])


def test_position_profile():
    prof = position_profile(_maps([4, 2], 4), torch.tensor([4, 2]), positions=6)
    assert prof[0, 0].item() == pytest.approx(1.0) and prof[0, 1].item() == 0.0
    assert prof[1, 0].item() == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert prof[1, 3].item() == pytest.approx(1 / 4)  # only the 4-token cell reaches position 3
    assert torch.isnan(prof[:, 4:]).all()


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, "0.3"])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        sink_rate(torch.zeros(2, 2), threshold)


def test_bad_maps():
    with pytest.raises(ValueError, match=r"\[B, H, L, L\]"):
        first_token_shares(torch.zeros(2, 3, 4), torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="lengths"):
        first_token_shares(torch.zeros(2, 1, 4, 4), torch.tensor([5, 4]))


@pytest.mark.parametrize("attention", ["softmax", "sigmoid"])
def test_analyze_fresh_encoder(attention):
    torch.manual_seed(13)
    cfg = ModelConfig(vocab_size=67, n_bins=11, d_model=16, n_layers=2, n_heads=2, attention=attention)
    cells = SyntheticCells(67, "binned", 11, min_genes=4, max_genes=20, seed=13)
    batches = [cells.batch(0, 3, packed=True), cells.batch(1, 2, packed=False)]
    out = analyze_encoder(CellEncoder(cfg), batches, threshold=0.3, positions=4)
    assert out["cells"] == 5 and len(out["share"]) == 2 and len(out["share"][0]) == 2
    assert out["sink_rate"] == 0.0  # a fresh model attends near-uniformly: no sink heads
    for row in out["share"]:
        for v in row:
            assert abs(v - out["uniform"]) < 0.05
    if attention == "softmax":
        assert out["row_mass"][0][0] == pytest.approx(1.0)
        assert [v for r in out["raw"] for v in r] == pytest.approx([v for r in out["share"] for v in r])
