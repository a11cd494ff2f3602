"""What a benchmark number was measured on: device, driver, library versions, sigcell's git commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["collect_environment"]


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _git_commit() -> dict:
    import sigcell

    src = Path(sigcell.__file__).resolve().parent
    commit = _run(["git", "rev-parse", "HEAD"], cwd=src)
    if commit is None:
        return {"git_commit": None}
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src)
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def collect_environment(device: torch.device) -> dict:
    """Device name, driver, CUDA / cuDNN / torch / triton / sigcell versions and sigcell's git commit.

    Returns
    -------
    A JSON-ready dict; fields that cannot be found are ``None``.
    """
    import sigcell

    env: dict = {
        "device": str(device),
        "gpu": None,
        "driver": None,
        "cuda": torch.version.cuda,
        "cudnn": None,
        "torch": torch.__version__,
        "triton": None,
        "sigcell": sigcell.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    env.update(_git_commit())
    with contextlib.suppress(Exception):
        import triton

        env["triton"] = triton.__version__
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["compute_capability"] = f"{props.major}.{props.minor}"
        env["sm_count"] = props.multi_processor_count
        with contextlib.suppress(Exception):
            env["cudnn"] = torch.backends.cudnn.version()
        line = _run(["nvidia-smi", f"--id={index}", "--query-gpu=driver_version,clocks.max.sm",
                     "--format=csv,noheader"])
        if line:
            parts = [p.strip() for p in line.split(",")]
            env["driver"] = parts[0]
            if len(parts) > 1:
                env["max_sm_clock"] = parts[1]
    env["triton_cache_dir"] = os.environ.get("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))
    return env
