"""The studio's "propagate": a volume's edited slices carried through the others by SAM2's memory,
the same masks as `samadapt propagate` gives for the same key slice and memory model."""

from __future__ import annotations

import time

import numpy as np
import pytest

from .test_api import TOKEN, client_for


def _wait_for_job(client, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/api/train").json()
        if state["status"] != "running":
            return state
        time.sleep(0.2)
    raise AssertionError("the job did not finish")


def _disc_labels(size: int = 32) -> np.ndarray:
    x, y = np.mgrid[:size, :size]
    return ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2).astype(np.uint8)


@pytest.mark.slow
def test_propagate_fills_every_slice_from_the_edited_one_like_the_propagate_command(folder):
    from samadapt.inference.propagate_volume import KeyPrompt, read_stack, segment_stack

    client, studio = client_for(folder)
    client.headers["X-Studio-Token"] = TOKEN
    shown = studio.image("phantom")
    key = shown.to_display(_disc_labels())  # the browser sends displayed slices
    assert client.put("/api/cases/phantom/edits?index=4&version=0", content=key.tobytes()).status_code == 200

    started = client.post("/api/cases/phantom/propagate")
    assert started.status_code == 202 and started.json()["job"] == "propagate"
    state = _wait_for_job(client)
    assert state["status"] == "done", state
    assert "slice(s) 4 through 12 slices" in state["message"] and state["done"] == state["total"] == 12 - 4 + 4 + 1

    predicted = studio.predictions.get(studio.case("phantom").key)  # (A, B, N)
    assert predicted.shape == (32, 32, 12)
    assert np.array_equal(predicted[:, :, 4], _disc_labels())  # the edited slice comes back as drawn
    stack = read_stack(folder / "phantom.nii.gz")
    expected = segment_stack(studio.propagator.model, stack, [KeyPrompt(1, 4, mask=_disc_labels() == 1)],
                             {4: _disc_labels()})  # (N, A, B)
    assert np.array_equal(predicted, np.moveaxis(expected, 0, -1))
    assert client.get("/api/cases/phantom").json()["has_prediction"]


@pytest.mark.parametrize("case,edit,reason", [
    ("phantom", False, "label at least one slice"),
    ("flat", True, "this case is a 2D image"),
])
def test_propagate_without_edits_or_on_a_2d_image_is_refused(folder, case, edit, reason):
    from PIL import Image

    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(folder / "flat.png")
    client, studio = client_for(folder)
    client.headers["X-Studio-Token"] = TOKEN
    if edit:
        labels = np.ones(studio.image(case).display_hw(), np.uint8)
        client.put(f"/api/cases/{case}/edits?index=0&version=0", content=labels.tobytes())
    answer = client.post(f"/api/cases/{case}/propagate")
    assert 400 <= answer.status_code < 500 and reason in answer.json()["detail"]
    assert client.get("/api/train").json()["status"] == "idle"  # no job started


def test_weights_without_sam2_memory_fail_the_job_in_one_line(folder, tmp_path):
    import torch

    from samadapt.studio.config import StudioConfig
    from samadapt.studio.server import create_app
    from samadapt.studio.session import Studio
    from fastapi.testclient import TestClient

    weights = tmp_path / "image_only.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1),  # SAM2's key layout, image half only
                          "sam_mask_decoder.iou_token.weight": torch.zeros(1)}}, weights)
    studio = Studio(folder, StudioConfig(image_size=64), weights)
    client = TestClient(create_app(studio, TOKEN), raise_server_exceptions=False)
    client.headers["X-Studio-Token"] = TOKEN
    labels = np.zeros(studio.image("phantom").display_hw(), np.uint8)
    labels[10:20, 10:20] = 1
    client.put("/api/cases/phantom/edits?index=2&version=0", content=labels.tobytes())
    assert client.post("/api/cases/phantom/propagate").status_code == 202
    state = _wait_for_job(client)
    assert state["status"] == "failed" and "internal error" not in state["message"], state
    assert "\n" not in state["message"] and "memory" in state["message"]
