"""Tiny generated datasets shared by the data-layer tests (64-pixel phantoms: fast on 2 cores)."""

from __future__ import annotations

import pytest

from samadapt.data.phantoms import generate_phantoms


@pytest.fixture(scope="session")
def fa_phantoms(tmp_path_factory):
    """Folder with 12 FA phantom frames (6 eyes x 2 frames) at 64 px and 3 unlabeled frames."""
    out = tmp_path_factory.mktemp("fa") / "phantoms"
    generate_phantoms(out, n=12, size=64, seed=3, kind="fa", unlabeled=3)
    return out


@pytest.fixture(scope="session")
def anatomy_volumes(tmp_path_factory):
    out = tmp_path_factory.mktemp("anatomy3d") / "phantoms"
    generate_phantoms(out, n=3, size=32, seed=1, kind="anatomy", dims="3d", depth=10)
    return out
