"""Shared fixtures: the study's reference data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "stier2021"


def reference_dir() -> Path | None:
    """Folder of the study's published data: $GRAPHPRIOR_REFERENCE or ../shared/reference/stier2021."""
    path = Path(os.environ.get("GRAPHPRIOR_REFERENCE", _DEFAULT_REFERENCE))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def stier2021() -> Path:
    """Path of the study's data; skips the test with a clear message when it is absent."""
    path = reference_dir()
    if path is None:
        pytest.skip(
            "reference data not found: set GRAPHPRIOR_REFERENCE or place the study's data "
            f"at {_DEFAULT_REFERENCE}"
        )
    return path


@pytest.fixture
def one_thread():
    """One intra-op torch thread: small models train fastest so, steadily on shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
