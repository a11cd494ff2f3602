"""Masked-expression pretraining: the prediction head and the encoder + head module the trainer runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sigcell.data.batch import CellBatch
from sigcell.model.config import ModelConfig
from sigcell.model.encoder import CellEncoder
from sigcell.model.norm import make_norm

__all__ = ["MaskedExpressionHead", "MaskedExpressionModel", "PretrainOutput"]


class MaskedExpressionHead(nn.Module):
    """Predicts the masked tokens from their final states.

    * continuous values: regression (squared error) of the value;
    * binned values: cross-entropy over the ``n_bins`` bins;
    * rank encoding: cross-entropy over the gene vocabulary (masked gene-identity prediction, as
      Geneformer).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.objective = config.objective
        out = {"regression": 1, "bins": config.n_bins, "gene_id": config.vocab_size}[self.objective]
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.act = nn.GELU()
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.decoder = nn.Linear(config.d_model, out)
        for lin in (self.dense, self.decoder):
            nn.init.normal_(lin.weight, std=config.init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Predictions ``[N, out]`` (``out`` = 1, ``n_bins`` or ``vocab_size``) for states ``[N, d]``."""
        return self.decoder(self.norm(self.act(self.dense(states))))

    def loss_sum(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed (not averaged) float32 loss over the ``N`` masked tokens; the trainer normalizes it."""
        pred = self(states).float()
        if self.objective == "regression":
            return (pred.squeeze(-1) - targets.float()).pow(2).sum()
        return F.cross_entropy(pred, targets.long(), reduction="sum")


@dataclass
class PretrainOutput:
    """What :meth:`MaskedExpressionModel.forward` returns.

    Attributes
    ----------
    loss_sum
        float32 scalar: the loss summed over this batch's masked tokens.
    n_masked
        int64 scalar: the number of masked tokens.
    """

    loss_sum: torch.Tensor
    n_masked: torch.Tensor


class MaskedExpressionModel(nn.Module):
    """A :class:`CellEncoder` with its masked-expression head; what pretraining optimizes and saves.

    Parameters
    ----------
    config
        The architecture (shared by the encoder and the head).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = CellEncoder(config)
        self.head = MaskedExpressionHead(config)

    def forward(self, batch: CellBatch) -> PretrainOutput:
        """Loss of a masked batch (``batch.mask`` and ``batch.targets`` set, see ``sigcell.train.masking``).

        ``targets`` has the shape of ``gene_ids``; only its masked entries are read.
        """
        if batch.mask is None or batch.targets is None:
            msg = ("MaskedExpressionModel needs a masked batch (mask and targets set); apply "
                   "sigcell.train.mask_batch(batch, ...) first, or call .encoder / .embed for inference")
            raise ValueError(msg)
        out = self.encoder(batch)
        mask = batch.mask
        states = out.hidden[mask]
        targets = batch.targets[mask]
        return PretrainOutput(self.head.loss_sum(states, targets), mask.sum())

    def embed(self, batch: CellBatch, pooling: str | None = None) -> torch.Tensor:
        """Cell embeddings ``[B, d_model]``; see :meth:`CellEncoder.embed`."""
        return self.encoder.embed(batch, pooling)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Parameters of encoder + head; ``embeddings=False`` leaves out the per-gene tables and outputs."""
        total = sum(p.numel() for p in self.parameters())
        if not embeddings:
            total -= self.encoder.num_parameters() - self.encoder.num_parameters(embeddings=False)
            if self.head.objective == "gene_id":
                total -= self.head.decoder.weight.numel() + self.head.decoder.bias.numel()
        return total
