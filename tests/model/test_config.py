"""ModelConfig validation and the size presets."""

from __future__ import annotations

import re

import pytest
import torch

from sigcell.model import PRESETS, MaskedExpressionModel, ModelConfig, load_preset, preset_path
from sigcell.model.config import LEGACY_VALUES

BAD = [
    ({"attention": "linear"}, "attention must be one of ['sigmoid', 'softmax'], got 'linear'"),
    ({"value_encoding": "log"}, "value_encoding must be one of"),
    ({"pooling": "max"}, "pooling must be one of ['cls', 'mean']"),
    ({"sigmoid_bias": "zero"}, "sigmoid_bias must be one of ['neg_log_n', 'learned']"),
    ({"norm": "batchnorm"}, "norm must be one of"),
    ({"d_model": 30, "n_heads": 4}, "d_model (30) must be divisible by n_heads (4)"),
    ({"n_heads": 4, "n_kv_heads": 3}, "must be a multiple of n_kv_heads (3)"),
    ({"d_model": 0}, "d_model must be an integer >= 1, got 0"),
    ({"n_layers": 2.5}, "n_layers must be an integer >= 1, got 2.5"),
    ({"vocab_size": 3}, "vocab_size must be an integer >= 4"),
    ({"n_bins": 1}, "n_bins must be an integer >= 2"),
    ({"dropout": 1.0}, "dropout must be a finite number in [0.0, 1.0)"),
    ({"init_std": 0.0}, "init_std must be a finite number in (0.0, inf)"),
    ({"sigmoid_bias_init": float("nan")}, "sigmoid_bias_init must be a finite number"),
    ({"qk_norm": "yes"}, "qk_norm must be true or false, got 'yes'"),
    ({"d_model": 1024, "n_heads": 2}, "head dim d_model / n_heads = 512 must lie in [1, 256]"),
    ({"cell_objective": "contrastive"},
     "cell_objective must be one of ['none', 'mvc', 'profile'], got 'contrastive'"),
    ({"cell_loss_weight": -1.0}, "cell_loss_weight must be a finite number in [0.0, inf)"),
    ({"cell_loss_weight": float("inf")}, "cell_loss_weight must be a finite number"),
    ({"cell_loss_weight": 0.0}, "cell_loss_weight is 0 with cell_objective 'profile'"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD)
def test_invalid_values_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig(**kwargs)


def test_unknown_field_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['d_modle'\]; valid fields are .*'d_model'"):
        ModelConfig.from_dict({"d_modle": 64})


def test_round_trip_through_dict():
    for cfg in (ModelConfig(d_model=48, n_heads=3, qk_norm=True, attention="softmax"),
                ModelConfig(cell_objective="none", pooling="mean"), ModelConfig(cell_loss_weight=0.25)):
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_the_cell_objective_is_on_by_default_and_off_in_old_dumps():
    assert ModelConfig().cell_objective == "profile"
    # a partial dict (a preset) takes the defaults
    assert ModelConfig.from_dict(load_preset("tiny")["model"]).cell_objective == "profile"
    assert ModelConfig(cell_objective="none", cell_loss_weight=0.0).cell_loss_weight == 0.0
    # A complete dump written before the field existed (a run's config.yaml) keeps the old behaviour.
    old = {k: v for k, v in ModelConfig(d_model=48, n_heads=3).to_dict().items() if k not in LEGACY_VALUES}
    assert ModelConfig.from_dict(old) == ModelConfig(d_model=48, n_heads=3, cell_objective="none")
    assert ModelConfig.from_dict({**old, "cell_objective": "mvc"}).cell_objective == "mvc"
    partial = dict(old)
    partial.pop("dropout")  # not a complete dump: every missing field takes its dataclass default
    assert ModelConfig.from_dict(partial).cell_objective == "profile"


@pytest.mark.parametrize(("name", "low", "high"), [
    ("tiny", 5e4, 2e5), ("small", 8e6, 12e6), ("base", 40e6, 55e6), ("large", 150e6, 180e6)])
def test_presets_have_the_advertised_sizes(name, low, high):
    cfg = ModelConfig.from_dict(load_preset(name)["model"])
    with torch.device("meta"):
        model = MaskedExpressionModel(cfg)
    # the advertised size is the encoder's (what embeds and ships); the pretraining heads come on top
    assert low <= model.encoder.num_parameters() <= high
    # without the per-gene tables (input embedding, the profile head's vocabulary-wide output)
    per_gene = cfg.vocab_size * cfg.d_model
    assert model.num_parameters(embeddings=False) <= model.num_parameters() - 2 * per_gene


def test_preset_lookup_errors():
    assert set(PRESETS) == {"tiny", "small", "base", "large"}
    with pytest.raises(FileNotFoundError, match=r"unknown preset 'huge'; choose one of \['tiny'"):
        preset_path("huge")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        preset_path("/nonexistent/config.yaml")
