"""The training loop: loss falls, exact resume, non-finite stop, accumulation, logs, checkpoints."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from sigcell.data.batch import CellBatch
from sigcell.model.validate import check_batch
from sigcell.train import Trainer, load_checkpoint, pretrain
from sigcell.train.checkpoint import find_checkpoint
from sigcell.train.data import TrainData
from sigcell.train.masking import mask_batch
from sigcell.train.synthetic import SyntheticCells

from .helpers import losses, tiny_config


@pytest.mark.parametrize("attention", ["sigmoid", "softmax"])
def test_loss_falls_on_synthetic_cells(tmp_path, attention):
    cfg = tiny_config(tmp_path, steps=80, val_every=40, ckpt_every=0, model__attention=attention,
                      data__batch_size=8)
    result = pretrain(cfg)
    assert result.status == "completed" and result.step == 80
    curve = [losses(tmp_path)[s] for s in range(1, 81)]
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert last < first - 0.25, f"loss did not fall: {first:.3f} -> {last:.3f}"
    val = losses(tmp_path, "val")
    assert val[80] < first - 0.25, f"held-out loss did not fall: {first:.3f} -> {val[80]:.3f}"


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, layout):
    extra = {"data__layout": layout, "grad_accum": 2, "model__dropout": 0.1}  # dropout: RNG state must resume
    pretrain(tiny_config(tmp_path / "full", **extra))
    cfg = tiny_config(tmp_path / "cut", **extra)
    paused = pretrain(cfg, until=6)  # killed after step 6: the newest checkpoint is step 4
    assert paused.status == "paused" and find_checkpoint(tmp_path / "cut").name == "step_00000004"
    resumed = pretrain(cfg, resume=True)
    assert resumed.status == "completed" and resumed.step == 8
    full, cut = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(full) == sorted(cut) == list(range(1, 9))
    for step in range(1, 9):
        assert cut[step] == pytest.approx(full[step], rel=1e-6, abs=1e-6), step
    assert losses(tmp_path / "cut", "val")[8] == pytest.approx(losses(tmp_path / "full", "val")[8], rel=1e-6)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(trainer, step, metrics):
        if step == 5:  # after the step-4 checkpoint: break the weights
            with torch.no_grad():
                trainer.model.encoder.blocks[0].mlp.fc1.weight.fill_(float("nan"))

    trainer = Trainer(tiny_config(tmp_path, ckpt_every=4, val_every=0), callbacks=(poison,))
    result = trainer.fit()
    assert result.status == "nonfinite" and result.step == 5
    assert "non-finite value at step 6" in result.message and "step_00000004" in result.message
    assert result.checkpoint.name == "step_00000004"
    assert find_checkpoint(tmp_path).name == "step_00000004"
    run = load_checkpoint(tmp_path)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "nonfinite" and records[-1]["step"] == 6


def _pre_masked(batches):
    class Fixed:
        def __init__(self):
            self.i = 0

        def __next__(self):
            self.i += 1
            return batches[(self.i - 1) % len(batches)]

        def state_dict(self):
            return {"i": self.i}

        def load_state_dict(self, state):
            self.i = state["i"]

    return TrainData(train=Fixed(), val_source=lambda n: [])


def _concat(a: CellBatch, b: CellBatch) -> CellBatch:
    cu = torch.cat([a.cu_seqlens, b.cu_seqlens[1:] + a.cu_seqlens[-1]])
    return CellBatch(gene_ids=torch.cat([a.gene_ids, b.gene_ids]), values=torch.cat([a.values, b.values]),
                     cu_seqlens=cu, max_seqlen=max(a.max_seqlen, b.max_seqlen),
                     mask=torch.cat([a.mask, b.mask]), targets=torch.cat([a.targets, b.targets]))


def test_accumulation_weighs_every_masked_token_equally(tmp_path, monkeypatch):
    """2 micro-batches with different masked counts == one batch holding both (global-count normalization)."""
    src = SyntheticCells(67, "binned", 7, 2, 24, 3, 5)
    g = torch.Generator().manual_seed(5)
    b0 = mask_batch(src.batch(0, 2), 0.2, "binned", g)
    b1 = mask_batch(src.batch(1, 6), 0.5, "binned", g)
    assert int(b0.mask.sum()) != int(b1.mask.sum())
    monkeypatch.setattr(Trainer, "_masked", lambda self, batch, *keys: batch)
    results = []
    for name, accum, data in (("acc", 2, [b0, b1]), ("one", 1, [_concat(b0, b1)])):
        cfg = tiny_config(tmp_path / name, grad_accum=accum, val_every=0, ckpt_every=0, steps=2,
                          optim__clip_grad_norm=None)
        trainer = Trainer(cfg, data=_pre_masked(data))
        metrics = trainer.train_step()
        results.append((metrics, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}))
    (m_acc, w_acc), (m_one, w_one) = results
    assert m_acc["loss"] == pytest.approx(m_one["loss"], rel=1e-5)
    assert m_acc["grad_norm"] == pytest.approx(m_one["grad_norm"], rel=1e-4)
    for k in w_acc:
        torch.testing.assert_close(w_acc[k], w_one[k], rtol=1e-4, atol=1e-6, msg=k)


def test_logs_config_and_checkpoint_contents(tmp_path):
    cfg = tiny_config(tmp_path, steps=4, ckpt_every=2, val_every=2, keep_checkpoints=1, tensorboard=True,
                      model__qk_norm=True)
    pretrain(cfg)
    assert (tmp_path / "config.yaml").read_text() == cfg.to_yaml()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    needed = {"loss", "lr", "grad_norm", "grad_norm/embed", "grad_norm/layer0", "grad_norm/layer1",
              "grad_norm/head", "attn/layer0/logit_max", "attn/layer1/row_mass", "tokens_per_s",
              "cells_per_s", "peak_mem_mb", "step_time_s", "masked_tokens"}
    assert needed <= set(train[0])
    layer_sq = sum(train[0][f"grad_norm/{k}"] ** 2 for k in ("embed", "layer0", "layer1", "head"))
    assert math.sqrt(layer_sq) == pytest.approx(train[0]["grad_norm"], rel=1e-4)
    assert train[0]["lr"] < train[1]["lr"]  # warmup
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["latest", "step_00000004"]  # keep_checkpoints=1, no temporary leftovers
    ckpt = tmp_path / "checkpoints" / "step_00000004"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "state.pt", "config.yaml", "meta.json"}
    state = torch.load(ckpt / "state.pt", weights_only=True)  # plain tensors and containers only
    assert state["step"] == 4 and len(state["ranks"]) == 1
    run = load_checkpoint(tmp_path)
    assert run.step == 4 and run.config == cfg and run.vocab is None and not run.model.training
    batch = SyntheticCells(67, "binned", 7, 3, 10, 2, 0).batch(0, 3)
    assert run.model.embed(batch).shape == (3, 32)


def test_vocab_file_travels_with_the_checkpoint(tmp_path):
    vocab = tmp_path / "genes.json"
    vocab.write_text(json.dumps({"genes": [f"G{i}" for i in range(64)]}))
    pretrain(tiny_config(tmp_path / "run", steps=2, data__vocab=str(vocab)))
    run = load_checkpoint(tmp_path / "run")
    assert run.vocab == {"genes": [f"G{i}" for i in range(64)]}


def test_refuses_to_overwrite_a_run_and_to_resume_another_model(tmp_path):
    pretrain(tiny_config(tmp_path, steps=2))
    with pytest.raises(FileExistsError, match=r"already holds a run.*pass --resume"):
        Trainer(tiny_config(tmp_path, steps=2))
    with pytest.raises(ValueError, match=r"its model config differs.*'d_model': \(32, 64\)"):
        Trainer(tiny_config(tmp_path, steps=4, model__d_model=64), resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint found under"):
        load_checkpoint(tmp_path / "nothing")


def test_check_batch_runs_on_trainer_batches(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, steps=1))
    raw = next(trainer.data.train)
    masked = trainer._masked(raw, 0)
    check_batch(masked, trainer.config.model)
    with pytest.raises(ValueError, match="binned values must lie in"):
        trainer._masked(replace(raw, values=raw.values + 100), 0)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_compiled_run_trains_like_the_eager_one(tmp_path, monkeypatch, layout):
    """compile=on runs the step through torch.compile (aot_eager here: no C++ toolchain needed) and gives
    the eager run's losses; attention statistics still come from the eager module."""
    from sigcell.train.trainer import uses_compile

    assert uses_compile("auto", torch.device("cuda")) and not uses_compile("auto", torch.device("cpu"))
    assert uses_compile("on", torch.device("cpu")) and not uses_compile("off", torch.device("cuda"))
    real_compile = torch.compile
    calls = []

    def compile_aot_eager(model, **kw):
        calls.append(model)
        return real_compile(model, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    pretrain(tiny_config(tmp_path / "eager", steps=6, data__layout=layout, compile="off"))
    assert not calls
    pretrain(tiny_config(tmp_path / "compiled", steps=6, data__layout=layout, compile="on"))
    assert len(calls) == 1
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(eager) == sorted(compiled) == list(range(1, 7))
    for step in range(1, 7):
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step
    last = [json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in last if r["step"] == 6 and r["kind"] == "train"][-1]
    assert any(k.startswith("attn/") for k in final), "the last step records attention statistics"
    assert final["loss/expression"] <= final["loss"]  # the objectives' shares are logged


def _records(out_dir, kind: str = "train") -> list[int]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if json.loads(line)["kind"] == kind]


def test_resume_skips_a_damaged_newest_checkpoint_and_logs_each_step_once(tmp_path):
    cfg = tiny_config(tmp_path, steps=12, ckpt_every=3, val_every=0, keep_checkpoints=3)
    pretrain(cfg, until=8)  # checkpoints 3 and 6; steps 7-8 logged, then "killed"
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000003", "step_00000006"]
    weights = root / "step_00000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated by a crash mid-write / a full disk
    with pytest.warns(UserWarning, match=r"skipping damaged checkpoint step_00000006: unreadable"):
        trainer = Trainer(cfg, resume=True)
    assert trainer.step == 3
    result = trainer.fit()
    assert result.status == "completed" and result.step == 12
    assert _records(tmp_path) == list(range(1, 13))  # 4..8 were logged twice before the fix


def test_resume_skips_non_finite_checkpoints_and_fails_clearly_without_an_intact_one(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = tiny_config(tmp_path, steps=8, ckpt_every=2, val_every=0, keep_checkpoints=2)
    pretrain(cfg, until=4)
    root = tmp_path / "checkpoints"
    newest = root / "step_00000004" / "model.safetensors"
    weights = load_file(str(newest))
    weights["encoder.norm.weight"] = torch.full_like(weights["encoder.norm.weight"], float("nan"))
    save_file(weights, str(newest))
    with pytest.warns(UserWarning, match=r"step_00000004: non-finite weights \(encoder.norm.weight\)"):
        assert Trainer(cfg, resume=True).step == 2
    (root / "step_00000002" / "state.pt").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"no intact checkpoint \(step_00000004: non-finite .*; "
                                         r"step_00000002: unreadable"), pytest.warns(UserWarning):
        Trainer(cfg, resume=True)


def test_resume_with_fewer_steps_than_done_is_an_error(tmp_path):
    pretrain(tiny_config(tmp_path, steps=8))
    with pytest.raises(ValueError, match="already at step 8; pass --steps above 8"):
        Trainer(tiny_config(tmp_path, steps=4), resume=True)
    assert Trainer(tiny_config(tmp_path, steps=8), resume=True).fit().status == "completed"


def test_a_compiler_failure_redoes_the_step_without_compile(tmp_path, monkeypatch):
    """When torch.compile's backend fails (as Inductor's CUDA lowering did on packed batches), the step is
    redone eagerly from zeroed gradients, one warning says so, and the run equals an eager run."""
    from torch._dynamo.exc import BackendCompilerFailed

    calls = []

    def failing_compile(model, **kw):
        def run(batch):
            calls.append(1)
            raise BackendCompilerFailed(None, RuntimeError("NotImplementedError: SliceView"), None)

        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    pretrain(tiny_config(tmp_path / "eager", steps=4, compile="off"))
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(BackendCompilerFailed.*continues"):
        pretrain(tiny_config(tmp_path / "fallback", steps=4, compile="on"))
    assert len(calls) == 1  # the compiled module is not tried again
    eager, fallback = losses(tmp_path / "eager"), losses(tmp_path / "fallback")
    assert eager == fallback


def test_model_errors_are_not_taken_for_compiler_failures():
    from sigcell.train.trainer import is_compiler_error

    assert not is_compiler_error(RuntimeError("shape mismatch"))
    assert not is_compiler_error(ValueError("BackendCompilerFailed"))
