"""Checkpoints: weights in safetensors, everything else as plain tensors / numbers, written atomically.

A checkpoint is a folder ``<out_dir>/checkpoints/step_00000100/``::

    model.safetensors   the MaskedExpressionModel weights (encoder.* and head.*)
    state.pt            optimizer, scheduler, data-iterator and RNG states (plain tensors and numbers)
    config.yaml         the resolved TrainConfig
    vocab.json          the gene vocabulary (when the run has one)
    meta.json           step, world size, time

It is written under a temporary name and renamed; ``checkpoints/latest`` (a one-line text file, also
replaced atomically) names the newest one. Loading uses ``torch.load(weights_only=True)``: nothing but
tensors and plain Python containers is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sigcell.model.heads import MaskedExpressionModel
from sigcell.train.config import TrainConfig

__all__ = ["LoadedRun", "find_checkpoint", "load_checkpoint", "read_checkpoint", "write_checkpoint"]

WEIGHTS, STATE, CONFIG, VOCAB, META, LATEST = (
    "model.safetensors", "state.pt", "config.yaml", "vocab.json", "meta.json", "latest")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    config: TrainConfig,
    vocab_path: str | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it and keep the newest ``keep``.

    Returns
    -------
    The checkpoint folder.
    """
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        (tmp / CONFIG).write_text(config.to_yaml())
        if vocab_path is not None:
            shutil.copyfile(vocab_path, tmp / VOCAB)
        (tmp / META).write_text(json.dumps({"step": step, "time": time.time()}))
        final = root / name
        if final.exists():  # the same step written again (e.g. after a resume): swap, then drop the old one
            old = root / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(root / LATEST, name + "\n")
    for stale in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        if stale.name != name:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """The checkpoint folder for a run folder (its latest), a checkpoints folder, or a checkpoint itself."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    for root in (path / "checkpoints", path):
        latest = root / LATEST
        if latest.is_file():
            candidate = root / latest.read_text().strip()
            if (candidate / WEIGHTS).is_file():
                return candidate
        steps = sorted(p for p in root.glob("step_*") if (p / WEIGHTS).is_file())
        if steps:
            return steps[-1]
    return None


def newest_intact_checkpoint(out_dir: str | os.PathLike) -> tuple[Path | None, tuple | None, list[str]]:
    """The newest checkpoint of a run that reads back whole with finite weights, and why newer ones did not.

    Returns
    -------
    (checkpoint folder or None, its ``read_checkpoint`` contents (weights, state, config) or None,
    one line per skipped newer checkpoint: ``"step_...: reason"``)
    """
    root = Path(out_dir) / "checkpoints"
    skipped: list[str] = []
    for ckpt in sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True):
        try:
            parts = read_checkpoint(ckpt)
        except DamagedCheckpoint as err:
            skipped.append(f"{ckpt.name}: {err.reason}")
            continue
        bad = nonfinite_tensors(parts[0])
        if "step" not in parts[1]:
            skipped.append(f"{ckpt.name}: its state.pt holds no step")
        elif bad:
            skipped.append(f"{ckpt.name}: non-finite weights ({bad[0]})")
        else:
            return ckpt, parts, skipped
    return None, None, skipped


def nonfinite_tensors(weights: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``weights`` holding a NaN or an infinity."""
    return [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]


class DamagedCheckpoint(ValueError):
    """A checkpoint file is missing or unreadable; ``reason`` says which, in a few words."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], TrainConfig]:
    """(weights, state, config) of a checkpoint folder, loaded without unpickling anything but tensors."""
    import yaml

    parts = ((WEIGHTS, lambda: load_file(str(ckpt / WEIGHTS))),
             (STATE, lambda: torch.load(ckpt / STATE, map_location="cpu", weights_only=True)),
             (CONFIG, lambda: TrainConfig.from_dict(yaml.safe_load((ckpt / CONFIG).read_text()))))
    loaded = []
    for name, read in parts:
        try:
            loaded.append(read())
        except FileNotFoundError:
            msg = f"checkpoint {ckpt} has no {name}: it is incomplete; use another checkpoint of the run"
            raise DamagedCheckpoint(msg, f"incomplete (no {name})") from None
        except Exception as err:  # truncated / corrupt file; the unpickler's own advice is never shown
            msg = (f"checkpoint {ckpt}: {name} is damaged ({type(err).__name__}); use another checkpoint "
                   "of the run (--resume picks the newest intact one)")
            raise DamagedCheckpoint(msg, f"unreadable ({type(err).__name__})") from None
    weights, state, config = loaded
    return weights, state, config


@dataclass
class LoadedRun:
    """A trained model with what it needs for inference.

    Attributes
    ----------
    model
        The :class:`~sigcell.model.MaskedExpressionModel` in eval mode (``model.embed(batch)``,
        ``model.encoder`` for the bare encoder).
    config
        The run's resolved :class:`TrainConfig` (``config.model`` is the architecture).
    vocab
        The gene vocabulary stored with the run: a ``sigcell.data.GeneVocab`` when the file is one,
        else the parsed JSON; None if the run had none (synthetic data).
    step
        Optimizer steps the weights were trained for.
    path
        The checkpoint folder.
    """

    model: MaskedExpressionModel
    config: TrainConfig
    vocab: Any
    step: int
    path: Path

    @property
    def encoder(self):
        """The bare :class:`~sigcell.model.CellEncoder`."""
        return self.model.encoder


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRun:
    """Load a trained model from a run folder (its latest checkpoint) or a checkpoint folder.

    Parameters
    ----------
    path
        ``<out_dir>``, ``<out_dir>/checkpoints`` or ``<out_dir>/checkpoints/step_XXXXXXXX``.
    device
        Where to put the model.

    Returns
    -------
    LoadedRun with the model in eval mode, its config, vocabulary and step.
    """
    ckpt = find_checkpoint(path)
    if ckpt is None:
        msg = (f"no checkpoint found under {str(path)!r}; expected a run folder written by "
               "`sigcell pretrain` "
               f"(with checkpoints/step_*/{WEIGHTS})")
        raise FileNotFoundError(msg)
    weights, state, config = read_checkpoint(ckpt)
    model = MaskedExpressionModel(config.model)
    model.load_state_dict(weights)
    model.to(device).eval()
    vocab = _read_vocab(ckpt / VOCAB) if (ckpt / VOCAB).is_file() else None
    return LoadedRun(model=model, config=config, vocab=vocab, step=int(state["step"]), path=ckpt)


def _read_vocab(path: Path) -> Any:
    from sigcell.data.vocab import GeneVocab

    try:
        return GeneVocab.load(path)
    except (ValueError, KeyError, TypeError):
        return json.loads(path.read_text())  # a vocabulary file of another format, passed with --vocab
