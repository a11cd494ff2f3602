"""Named size presets: ``sigcell/configs/{tiny,small,base,large}.yaml`` (sections model, data, optim, ...),
shipped inside the package so that a regular (non-editable) install has them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PRESETS = ("tiny", "small", "base", "large")


def _config_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("SIGCELL_CONFIG_DIR"):
        dirs.append(Path(os.environ["SIGCELL_CONFIG_DIR"]))
    dirs.append(Path(__file__).resolve().parents[1] / "configs")  # package data (pyproject.toml)
    return dirs


def preset_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file of a preset name (``"tiny"``...) or an explicit path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            msg = (f"config file {str(path)!r} does not exist; pass a preset name {list(PRESETS)} "
                   "or a YAML path")
            raise FileNotFoundError(msg)
        return path
    for folder in _config_dirs():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    msg = (f"unknown preset {str(name_or_path)!r}; choose one of {list(PRESETS)} or pass a YAML file "
           f"(searched {[str(d) for d in _config_dirs()]}; set SIGCELL_CONFIG_DIR to add a folder)")
    raise FileNotFoundError(msg)


def load_preset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The raw sections of a preset / config file as a dict (``{"model": {...}, "optim": {...}, ...}``)."""
    import yaml

    path = preset_path(name_or_path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        msg = f"config file {str(path)!r} is not valid YAML{at}: {getattr(err, 'problem', None) or err}"
        raise ValueError(msg) from None
    if not isinstance(data, dict):
        msg = f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}"
        raise ValueError(msg)
    return data
