"""The linear-probe benchmark: its Dice convention, its probe, and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch


ALL = [[1, 1], [1, 1]]


@pytest.mark.parametrize("probability, target, valid, expected", [
    ([[1.0, 1.0], [0.0, 0.0]], [[1, 1], [0, 0]], ALL, 1.0),  # exact
    ([[1.0, 0.0], [0.0, 0.0]], [[1, 1], [0, 0]], ALL, 2 / 3),  # half found
    ([[0.0, 0.0], [0.0, 0.0]], [[0, 0], [0, 0]], ALL, 1.0),  # empty reference predicted empty
    ([[1.0, 0.0], [0.0, 0.0]], [[0, 0], [0, 0]], ALL, 0.0),  # something where nothing is
    ([[1.0, 0.0], [0.0, 0.0]], [[0, 0], [0, 0]], [[0, 1], [1, 1]], 1.0),  # ... but in a padding cell
])
def test_image_dice_counts_valid_cells_only(probability, target, valid, expected):
    from benchmarks.linear_probe import image_dice

    p = torch.tensor(probability).view(1, 1, 2, 2)
    t = torch.tensor(target, dtype=torch.bool).view(1, 1, 2, 2)
    v = torch.tensor(valid, dtype=torch.bool).view(1, 2, 2)
    assert image_dice(p, t, v, [0.5])[0, 0] == pytest.approx(expected)


def test_probe_separates_what_one_feature_decides_and_not_noise():
    from benchmarks.linear_probe import fit_probe

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=generator)
    y = torch.stack([x[:, 3] > 0.5, torch.rand(2000, generator=generator) > 0.5], 1)
    p = fit_probe(x, y)(x)
    accuracy = ((p > 0.5) == y).float().mean(0)
    assert accuracy[0] > 0.97  # the feature that decides the class
    assert accuracy[1] < 0.6  # a coin flip stays one


@pytest.mark.slow
def test_end_to_end_pixels_find_bright_lesions_and_encoders_are_paired(tmp_path):
    from benchmarks.linear_probe import measure
    from samadapt.demo import pipeline
    from samadapt.demo.budget import QUICK

    budget = dataclasses.replace(QUICK, fa_train=6, fa_val=2, fa_test=4, finetune_size=128)
    data = pipeline.make_data(tmp_path, budget, pipeline.DemoInput(None), seed=0)
    result = measure(data["dataset"], data["splits"], ["random", "random"], "sam2-hiera-tiny", 128)
    assert result["cases"] == {"train": 6, "val": 2, "test": 4}
    rows = {(r["encoder"], r["features"]): r for r in result["rows"]}
    assert len(rows) == 1 + 4  # pixels, then 4 feature sets (the two "random" encoders share keys)
    assert all(len(r["test_per_image"]) == 4 for r in result["rows"])
    assert np.mean(rows[("pixels (no network)", "pixels")]["test_dice"]) > 0.25  # phantom lesions are bright
    # the same seeded draw twice: identical probes, a zero paired difference
    assert all(d["mean_difference"] == 0.0 for d in result["differences"])
