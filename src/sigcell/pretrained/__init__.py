"""Pretrained sigcell models shipped inside the package, loadable by name.

``sigcell.eval.embed(adata, "sigcell-small")`` and ``sigcell embed --model sigcell-small`` look the name
up here. A shipped model is a folder ``<root>/<name>/`` holding only what embedding needs::

    model.safetensors   weights in bfloat16 (float32 in memory after loading)
    config.yaml         the run's resolved TrainConfig (the architecture is config.model)
    vocab.json          the gene vocabulary (keyed by gene symbol)
    tokenizer.json      how cells were tokenized (TokenizerConfig)
    meta.json           name, training step, source run, file sizes and sha256 (written last)

``<root>`` is this package's folder, or ``$SIGCELL_PRETRAINED_DIR`` when set (tests, private models).
``export(run_dir, name)`` (``python -m sigcell.pretrained export RUN_DIR NAME``) turns a finished run
into that form; ``available()`` lists names; ``load(name)`` returns a ``sigcell.train.LoadedRun``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "MODELS", "available", "export", "is_model_name", "load", "model_dir", "root"]

ENV_VAR = "SIGCELL_PRETRAINED_DIR"
FORMAT = "sigcell-pretrained"
VERSION = 1
WEIGHTS, CONFIG, VOCAB, TOKENIZER, META = (
    "model.safetensors", "config.yaml", "vocab.json", "tokenizer.json", "meta.json")

# Names this sigcell release knows (their files may not be shipped yet); folders with a meta.json
# under root() are available too.
MODELS: dict[str, str] = {
    "sigcell-small": "small preset (sigmoid attention) pretrained on the pooled corpus of every registered "
                     "dataset, evaluation hold-out excluded",
}


def root() -> Path:
    """Folder holding the shipped models: ``$SIGCELL_PRETRAINED_DIR`` if set, else this package's folder."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path(__file__).resolve().parent


def _present(name: str, base: Path) -> bool:
    return (base / name / META).is_file() and (base / name / WEIGHTS).is_file()


def available() -> list[str]:
    """Names of the known models plus every exported model under :func:`root` (sorted)."""
    base = root()
    found = {p.name for p in base.iterdir() if _present(p.name, base)} if base.is_dir() else set()
    return sorted(set(MODELS) | found)


def is_model_name(text: str) -> bool:
    """True when ``text`` reads as a model name (no path separator, not an existing path)."""
    text = str(text)
    return bool(text) and "/" not in text and os.sep not in text and not Path(text).exists()


def model_dir(name: str) -> Path:
    """The folder of shipped model ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a known model; the message lists the available names.
    FileNotFoundError
        ``name`` is known but its files are not in this installation yet.
    """
    base = root()
    if _present(name, base):
        return base / name
    if name not in MODELS:
        msg = (f"unknown pretrained model {name!r}; available: {available()}; or pass a run folder "
               "(sigcell pretrain --out RUN)")
        raise ValueError(msg)
    msg = (f"pretrained model {name!r} is known but its files are not in {base / name} (this installation "
           f"does not ship its weights yet); export a trained run there with `python -m sigcell.pretrained "
           f"export RUN_DIR {name}`, or pass a run folder as the model")
    raise FileNotFoundError(msg)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(name: str, device: str = "cpu"):
    """Load shipped model ``name``.

    Parameters
    ----------
    name
        One of :func:`available`.
    device
        Where to put the model (its weights are cast from bfloat16 to float32).

    Returns
    -------
    sigcell.train.LoadedRun
        Model in eval mode, config, ``GeneVocab``, training step; ``path`` is the model's folder.
    """
    import torch
    import yaml
    from safetensors.torch import load_file

    from sigcell.data.vocab import GeneVocab
    from sigcell.model.heads import MaskedExpressionModel
    from sigcell.train.checkpoint import LoadedRun, nonfinite_tensors
    from sigcell.train.config import TrainConfig

    folder = model_dir(name)
    try:
        meta = json.loads((folder / META).read_text())
    except ValueError:
        msg = f"{folder / META} is not valid JSON: the model folder is damaged; reinstall or re-export it"
        raise ValueError(msg) from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        msg = f"{folder / META}: not a {FORMAT} v{VERSION} model; re-export it with this sigcell"
        raise ValueError(msg)
    try:
        config = TrainConfig.from_dict(yaml.safe_load((folder / CONFIG).read_text()))
        stored = load_file(str(folder / WEIGHTS))
    except FileNotFoundError:
        raise
    except Exception as err:  # YAML, safetensors' own error type, OS errors
        msg = (f"model {name!r} in {folder} cannot be read ({type(err).__name__}): a file is damaged; "
               "reinstall sigcell or re-export the model")
        raise ValueError(msg) from None
    model = MaskedExpressionModel(config.model)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    damaged = nonfinite_tensors(weights)
    if damaged:
        msg = (f"{folder / WEIGHTS} holds non-finite (NaN / inf) weights in {len(damaged)} tensor(s) (e.g. "
               f"{damaged[0]}); the file is damaged: reinstall sigcell or re-export the model")
        raise ValueError(msg)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    bad = [k for k in missing if k.startswith("encoder.")] + list(unexpected)
    if bad:
        msg = (f"{folder / WEIGHTS} does not fit its config.yaml (e.g. {bad[:3]}); the model folder is "
               "damaged or mixed: re-export it")
        raise ValueError(msg)
    if missing:  # exported with encoder_only: the pretraining heads are NaN, never silently untrained
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k in missing:
                if k in params:
                    params[k].fill_(float("nan"))
    model.to(device).eval()
    vocab = GeneVocab.load(folder / VOCAB)
    return LoadedRun(model=model, config=config, vocab=vocab, step=int(meta["step"]), path=folder)


def export(run_dir: str | os.PathLike, name: str, *, out_root: str | os.PathLike | None = None,
           encoder_only: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Write a finished run as shipped model ``name``: bf16 safetensors weights and what embed needs.

    Parameters
    ----------
    run_dir
        A run folder (its latest checkpoint is used), a checkpoints folder or one checkpoint folder.
    name
        The model's name (folder name), e.g. ``"sigcell-small"``.
    out_root
        Where to write ``<out_root>/<name>/`` (default :func:`root`, i.e. inside the package).
    encoder_only
        Leave out the pretraining heads (embedding needs only the encoder; a loaded model's heads are
        then NaN).
    overwrite
        Replace an existing model of that name (the new one is swapped in once complete).

    Returns
    -------
    dict
        The written ``meta.json``: step, parameters, files with bytes and sha256, ``total_bytes``.
    """
    import torch
    from safetensors.torch import save_file

    from sigcell.data.vocab import GeneVocab
    from sigcell.eval.embed import tokenizer_of
    from sigcell.train.checkpoint import LoadedRun, find_checkpoint, read_checkpoint

    if not is_model_name(name) or name.startswith("."):
        msg = f"model name must be a plain folder name (e.g. 'sigcell-small'), got {name!r}"
        raise ValueError(msg)
    ckpt = find_checkpoint(run_dir)
    if ckpt is None:
        msg = (f"no checkpoint found under {str(run_dir)!r}; expected a run folder written by `sigcell "
               "pretrain` (with checkpoints/step_*/model.safetensors)")
        raise FileNotFoundError(msg)
    if not (ckpt / VOCAB).is_file():
        msg = (f"{ckpt} has no vocab.json: the run was not trained on tokenized cells (synthetic data?), so "
               "it cannot embed real cells; pretrain on a corpus (sigcell prepare) first")
        raise ValueError(msg)
    vocab = GeneVocab.load(ckpt / VOCAB)
    weights, state, config = read_checkpoint(ckpt)
    step = int(state["step"])
    run = LoadedRun(model=None, config=config, vocab=vocab, step=step, path=ckpt)  # type: ignore[arg-type]
    tokenizer = tokenizer_of(run)
    if encoder_only:
        weights = {k: v for k, v in weights.items() if k.startswith("encoder.")}
    weights = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
               for k, v in weights.items()}

    base = Path(out_root) if out_root is not None else root()
    final = base / name
    if final.exists() and not overwrite and any(final.iterdir()):
        msg = f"{final} already exists; pass overwrite=True (--overwrite) to replace it"
        raise FileExistsError(msg)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT, "name": name, "step": str(step)})
        (tmp / CONFIG).write_text(config.to_yaml())
        vocab.save(tmp / VOCAB)
        (tmp / TOKENIZER).write_text(json.dumps(tokenizer.to_dict(), indent=1))
        from sigcell import __version__

        files = {f: {"bytes": (tmp / f).stat().st_size, "sha256": _sha256(tmp / f)}
                 for f in (WEIGHTS, CONFIG, VOCAB, TOKENIZER)}
        meta = {
            "format": FORMAT, "version": VERSION, "name": name, "step": step,
            "attention": config.model.attention, "pooling": config.model.pooling,
            "d_model": config.model.d_model, "n_parameters": int(sum(v.numel() for v in weights.values())),
            "dtype": "bfloat16", "encoder_only": bool(encoder_only), "vocab_genes": vocab.n_genes,
            "tokenizer": tokenizer.to_dict(),
            "source": {"run": str(Path(run_dir).resolve()), "checkpoint": ckpt.name,
                       "corpus": config.data.corpus},
            "files": files, "total_bytes": int(sum(f["bytes"] for f in files.values())),
            "sigcell_version": __version__, "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if final.exists():
            old = base / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
