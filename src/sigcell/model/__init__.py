"""The cell encoder (softmax or sigmoid attention), its configuration and its pretraining head."""

from sigcell.model.attention import STAT_NAMES, Attention
from sigcell.model.config import ModelConfig
from sigcell.model.encoder import CellEncoder, EncoderOutput, layout_of
from sigcell.model.heads import MaskedExpressionHead, MaskedExpressionModel, PretrainOutput
from sigcell.model.layout import SeqLayout
from sigcell.model.presets import PRESETS, load_preset, preset_path
from sigcell.model.validate import check_batch

__all__ = [
    "PRESETS",
    "STAT_NAMES",
    "Attention",
    "CellEncoder",
    "EncoderOutput",
    "MaskedExpressionHead",
    "MaskedExpressionModel",
    "ModelConfig",
    "PretrainOutput",
    "SeqLayout",
    "check_batch",
    "layout_of",
    "load_preset",
    "preset_path",
]
