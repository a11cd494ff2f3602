"""Data: AnnData in, tokenized cells out."""

from sigcell.data.batch import CellBatch

__all__ = ["CellBatch"]
