"""Masked-expression pretraining: configuration, masking, the trainer, checkpoints, distributed wiring."""

from sigcell.train.checkpoint import LoadedRun, find_checkpoint, load_checkpoint
from sigcell.train.config import DataConfig, OptimConfig, TrainConfig, apply_overrides
from sigcell.train.data import TrainData, build_data
from sigcell.train.masking import mask_batch
from sigcell.train.synthetic import SyntheticCells, SyntheticLoader
from sigcell.train.trainer import NonFiniteError, Trainer, TrainResult, pretrain

__all__ = [
    "DataConfig",
    "LoadedRun",
    "NonFiniteError",
    "OptimConfig",
    "SyntheticCells",
    "SyntheticLoader",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "build_data",
    "find_checkpoint",
    "load_checkpoint",
    "mask_batch",
    "pretrain",
]
