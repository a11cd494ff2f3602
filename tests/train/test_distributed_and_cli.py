"""SIGKILL + resume, 2-process gloo DDP / FSDP, the CLI and TrainConfig errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sigcell.cli import main
from sigcell.train import TrainConfig, pretrain

from .helpers import TINY_DATA, TINY_MODEL, losses, tiny_config

HERE = Path(__file__).parent
PY = sys.executable


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE))
    return env


def test_sigkill_then_resume_reproduces_the_loss_curve(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run([PY, str(HERE / "kill_target.py"), str(full), "resume"], check=True, env=_env(),
                   capture_output=True, timeout=120)
    proc = subprocess.Popen([PY, str(HERE / "kill_target.py"), str(cut), "fresh"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once step 5 is logged: the newest checkpoint is step 3
        metrics = cut / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 5 <= len(losses(cut)) < 10, "the run was not killed mid-way"
    subprocess.run([PY, str(HERE / "kill_target.py"), str(cut), "resume"], check=True, env=_env(),
                   capture_output=True, timeout=120)
    a, b = losses(full), losses(cut)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-6), step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_flags(out) -> list[str]:
    sets = {**TINY_MODEL, **TINY_DATA}
    flags = ["--out", str(out), "--steps", "4", "--device", "cpu", "--no-progress", "--no-tensorboard",
             "--val-every", "2", "--ckpt-every", "2", "--lr", "3e-3"]
    for key, value in sets.items():
        flags += ["--set", f"{key}={value}"]
    return flags


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process_with_accumulation(tmp_path, strategy):
    two, one = tmp_path / "two", tmp_path / "one"
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "sigcell", "pretrain", *_cli_flags(two), "--parallel", strategy]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["pretrain", *_cli_flags(one), "--grad-accum", "2"]) == 0
    for kind in ("train", "val"):
        a, b = losses(one, kind), losses(two, kind)
        assert sorted(a) == sorted(b)
        for step in a:
            assert b[step] == pytest.approx(a[step], rel=1e-5), (kind, step)


def test_cli_pretrain_dry_run_resume_and_no_clip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", *_cli_flags(out), "--dry-run", "--no-clip", "--attention", "softmax"]) == 0
    printed = capsys.readouterr().out
    assert "clip_grad_norm: null" in printed and "attention: softmax" in printed
    assert re.search(r"# parameters: [\d,]+ \([\d,]+ without gene tables\)", printed)
    assert not out.exists()
    assert main(["pretrain", *_cli_flags(out)]) == 0
    assert main(["pretrain", "--out", str(out), "--resume", "--steps", "6", "--no-progress"]) == 0
    assert TrainConfig.from_preset(out / "config.yaml").steps == 6
    assert sorted(losses(out)) == list(range(1, 7))
    assert main(["pretrain", *_cli_flags(out)]) == 2  # exists, no --resume
    assert "already holds a run" in capsys.readouterr().err
    assert main(["pretrain", "--clip", "1", "--no-clip", "--dry-run"]) == 2
    assert main(["pretrain", "--set", "model.d_modle=3", "--dry-run"]) == 2
    assert "unknown setting 'model.d_modle'" in capsys.readouterr().err


def test_cli_presets_lists_parameter_counts(capsys):
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    for name in ("tiny", "small", "base", "large"):
        assert re.search(rf"^{name}\s+\d+\s+\d+\s+\d+\s+\d+\s+[\d,]+\s+[\d,]+$", text, re.M), name


BAD_TRAIN = [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"grad_accum": -1}, "grad_accum must be an integer >= 1"),
    ({"precision": "fp16"}, "precision must be one of ['auto', 'bf16', 'fp32'], got 'fp16'"),
    ({"parallel": "zero3"}, "parallel must be one of ['ddp', 'fsdp']"),
    ({"device": "tpu"}, "device must be one of ['auto', 'cpu', 'cuda']"),
    ({"data.layout": "ragged"}, "data.layout must be one of ['packed', 'padded']"),
    ({"data.mask_fraction": 1.5}, "data.mask_fraction must lie in (0, 1), got 1.5"),
    ({"data.batch_size": 0}, "data.batch_size must be an integer >= 1"),
    ({"data.synthetic_min_genes": 50, "data.synthetic_max_genes": 10},
     "data.synthetic_max_genes (10) must be >="),
    ({"optim.lr": -1.0}, "optim.lr must be a finite number > 0, got -1.0"),
    ({"optim.beta2": 1.0}, "optim.beta2 must lie in [0, 1), got 1.0"),
    ({"optim.min_lr_ratio": 2}, "optim.min_lr_ratio must lie in [0, 1]"),
    ({"optim.clip_grad_norm": 0.0}, "optim.clip_grad_norm must be a finite number > 0"),
    ({"optim.warmup_steps": -5}, "optim.warmup_steps must be an integer >= 0"),
    ({"model.attention": "relu"}, "ModelConfig.attention must be one of ['sigmoid', 'softmax'], got 'relu'"),
    ({"optim.learning_rate": 1.0}, "unknown setting 'optim.learning_rate'; valid optim.* names are"),
    ({"trainer.steps": 1}, "unknown setting 'trainer.steps'"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_TRAIN)
def test_invalid_train_settings_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig.from_preset("tiny", overrides)


def test_unknown_yaml_field_and_synthetic_size_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_model: 32\nstepz: 3\n")
    with pytest.raises(ValueError, match=re.escape("unknown config field(s) ['stepz']")):
        TrainConfig.from_preset(bad)
    with pytest.raises(ValueError, match=r"max_genes .* exceeds the 64 genes of the vocabulary"):
        pretrain(tiny_config(tmp_path / "r", data__synthetic_max_genes=100))
