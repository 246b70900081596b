"""A tiny folder for the studio tests: a phantom volume, a second volume and a corrupt file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the studio needs fastapi: pip install 'samadapt[studio]'")


def disc_volume(size: int = 32, depth: int = 12, seed: int = 0) -> np.ndarray:
    """(size, size, depth) float32: a bright disc on noise, the same on every slice."""
    x, y = np.mgrid[:size, :size]
    disc = ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 5, (size, size, depth)).astype(np.float32)
    return disc[:, :, None] * 100 + noise


def write_folder(root: Path, size: int = 32, depth: int = 12) -> Path:
    from samadapt.data.volumes import Volume, volume_to_bytes

    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    (root / "phantom.nii.gz").write_bytes(volume_to_bytes(Volume(disc_volume(size, depth), affine), gz=True))
    (root / "broken.nii.gz").write_bytes(b"this is not a volume")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_folder(tmp_path / "studio")
