"""Where the real development data is (../shared/data), for tests that use it.

A module of its own, not conftest.py: several test folders have a conftest.py, and a plain
`from conftest import ...` would pick whichever one was imported first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("SAMADAPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_subdir(*parts: str) -> Path:
    """A sub-folder of the shared data, skipping the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real development data not found at {path} (set SAMADAPT_SHARED_DATA)")
    return path
