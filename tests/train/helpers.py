"""Shared helpers of the training tests."""

from __future__ import annotations

import json
from pathlib import Path

from sigcell.train import TrainConfig

TINY_MODEL = {"model.vocab_size": 67, "model.n_bins": 7, "model.d_model": 32, "model.n_layers": 2,
              "model.n_heads": 4, "model.d_ff": 48}
TINY_DATA = {"data.batch_size": 4, "data.synthetic_min_genes": 6, "data.synthetic_max_genes": 24,
             "data.synthetic_cell_types": 3}


def tiny_config(out_dir, **overrides) -> TrainConfig:
    values = {**TINY_MODEL, **TINY_DATA, "out_dir": str(out_dir), "steps": 8, "val_every": 4, "ckpt_every": 4,
              "progress": False, "tensorboard": False, "optim.warmup_steps": 2, "optim.lr": 3e-3,
              "device": "cpu"}
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return TrainConfig.from_preset("tiny", values)


def losses(out_dir, kind: str = "train") -> dict[int, float]:
    """Loss per step from metrics.jsonl (the last record of a step wins, as after a resume)."""
    out = {}
    for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == kind:
            out[rec["step"]] = rec["loss"]
    return out
