"""CT windows and MR percentile normalisation as part of the dataset description."""

from __future__ import annotations

import numpy as np
import pytest

from samadapt.data.dataset import load_dataset
from samadapt.data.intensity import CT_WINDOWS, DEFAULT_INTENSITY, parse_intensity, scale_volume
from samadapt.data.phantoms import generate_phantoms
from samadapt.errors import UserError


def test_settings_have_one_spelling():
    assert parse_intensity("percentile") == DEFAULT_INTENSITY == "percentile:0.5-99.5"
    assert parse_intensity(" Percentile:1-99 ") == "percentile:1-99"
    assert parse_intensity("ct:lung") == "ct:lung"
    assert parse_intensity("ct:50/350.0") == "ct:50/350"
    assert parse_intensity("ct:-600/1500") == "ct:-600/1500"
    for text in (DEFAULT_INTENSITY, "ct:bone", "ct:-600/1500", "percentile:1-99"):
        assert parse_intensity(parse_intensity(text)) == parse_intensity(text)
    for bad, fragment in (("ct:liver", "use percentile"), ("ct:40/0", "width must be positive"),
                          ("percentile:99-1", "0 <= LOW < HIGH <= 100"), ("zscore", "use percentile")):
        with pytest.raises(UserError, match=fragment):
            parse_intensity(bad)


def test_a_ct_window_maps_level_minus_half_width_to_0_and_plus_half_width_to_1():
    hu = np.array([[[-1000.0, -160.0, 40.0, 140.0, 240.0, 3000.0]]])
    assert scale_volume(hu, "ct:40/400").ravel().tolist() == pytest.approx([0, 0, 0.5, 0.75, 1, 1])
    assert scale_volume(hu, "ct:soft_tissue").tolist() == scale_volume(hu, "ct:40/400").tolist()
    level, width = CT_WINDOWS["lung"]
    assert scale_volume(np.array([[[level]]]), "ct:lung").item() == pytest.approx(0.5)
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    scaled = scale_volume(ramp, "percentile:10-90")
    assert scaled.min() == 0 and scaled.max() == 1 and scaled.dtype == np.float32
    assert np.count_nonzero(scaled == 0) == pytest.approx(101, abs=1)  # the lowest 10 % clipped


def test_the_description_carries_the_setting_to_every_case(tmp_path):
    description = generate_phantoms(tmp_path / "ph", n=2, size=32, kind="anatomy", dims="3d", depth=8)
    text = description.read_text()
    description.write_text(text + "intensity: ct:brain\n")
    dataset = load_dataset(description)
    assert dataset.spec.intensity == "ct:brain" and {c.intensity for c in dataset.cases} == {"ct:brain"}
    assert dataset.spec.to_dict()["intensity"] == "ct:brain"
    case = dataset.cases[0]
    np.testing.assert_array_equal(case.load_scaled_volume(), scale_volume(case.load_image(), "ct:40/80"))
    description.write_text(text + "intensity: ct:liver\n")
    with pytest.raises(UserError, match=r"dataset.yaml: intensity 'ct:liver': use percentile"):
        load_dataset(description)
    flat = generate_phantoms(tmp_path / "ph2d", n=1, size=32, kind="anatomy")
    flat.write_text(flat.read_text() + "intensity: ct:lung\n")
    with pytest.raises(UserError, match="'intensity' applies to 3d datasets"):
        load_dataset(flat)
