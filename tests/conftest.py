"""Shared test fixtures: seeding, the location of the real development data, tiny temp folders."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

# Real data lives beside the project (../shared/data); tests that need it skip when it is absent.
SHARED_DATA = Path(os.environ.get("SAMADAPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with a message when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real development data not found at {SHARED_DATA} (set SAMADAPT_SHARED_DATA)")
    return SHARED_DATA


def shared_subdir(*parts: str) -> Path:
    """A sub-folder of the shared data, skipping the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real development data not found at {path} (set SAMADAPT_SHARED_DATA)")
    return path
