"""Shared test fixtures: seeding and the location of the real development data."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import SHARED_DATA


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
