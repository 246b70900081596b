"""The studio's HTTP API without a browser: access token, path confinement, body limits, bad
requests, edits with versions and their restoration. No model is built here (fast)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from samadapt.studio.config import StudioConfig
from samadapt.studio.paths import confined

TOKEN = "test-token"


def client_for(folder: Path, **settings):
    from fastapi.testclient import TestClient

    from samadapt.studio.server import create_app
    from samadapt.studio.session import Studio

    studio = Studio(folder, StudioConfig(image_size=64, **settings), None)
    return TestClient(create_app(studio, TOKEN), raise_server_exceptions=False), studio


@pytest.fixture
def client(folder):
    client, _ = client_for(folder)
    client.headers["X-Studio-Token"] = TOKEN
    return client


def test_every_request_needs_the_token(folder):
    client, _ = client_for(folder)
    for path in ("/", "/api/cases", "/assets/studio.js", "/api/cases/phantom/image", "/api/train/events"):
        assert client.get(path).status_code == 403, path
        assert client.get(path, headers={"X-Studio-Token": "wrong"}).status_code == 403, path
    assert client.put("/api/cases/phantom/edits?index=0&version=0", content=b"x").status_code == 403
    assert client.get("/api/cases", params={"token": TOKEN}).status_code == 200
    assert client.get("/api/cases", headers={"X-Studio-Token": TOKEN}).status_code == 200
    page = client.get("/", params={"token": TOKEN})
    assert page.status_code == 200 and "samadapt studio" in page.text
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/api/cases").status_code == 200  # the cookie the page set


def test_a_corrupt_file_is_listed_with_its_error_not_fatal(client):
    cases = {c["id"]: c for c in client.get("/api/cases").json()["cases"]}
    assert cases["phantom"]["error"] is None and cases["phantom"]["shape"] == [32, 32, 12]
    assert "broken.nii.gz" in cases["broken"]["error"] and "\n" not in cases["broken"]["error"]
    answer = client.get("/api/cases/broken")
    assert answer.status_code == 400 and "unreadable" in answer.json()["detail"]


@pytest.mark.parametrize("name", ["../secret.txt", "..%2fsecret.txt", "%2e%2e/secret.txt", "%252e%252e%252fsecret.txt",
                                  "/etc/passwd", "a/../../secret.txt", ".hidden", "a\\..\\b", "./x"])
def test_confined_refuses_escapes(tmp_path, name):
    from samadapt.errors import UserError

    with pytest.raises(UserError):
        confined(tmp_path, name)


def test_confined_refuses_a_symlink_out(tmp_path):
    from samadapt.errors import UserError

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link.png").symlink_to(outside)
    with pytest.raises(UserError, match="outside"):
        confined(tmp_path / "root", "link.png")
    assert confined(tmp_path / "root", "sub/file.png") == tmp_path / "root" / "sub" / "file.png"


@pytest.mark.parametrize("path", ["/assets/../server.py", "/assets/..%2fserver.py", "/assets/%2e%2e/server.py",
                                  "/assets/%2e%2e%2f%2e%2e%2fcli.py", "/assets//etc/passwd", "/assets/..%5cserver.py"])
def test_assets_stay_in_the_package_folder(client, path):
    answer = client.get(path)
    assert answer.status_code in (400, 404), (path, answer.status_code)
    assert "import" not in answer.text


@pytest.mark.parametrize("name", ["../escape.png", "%2e%2e%2fescape.png", "/tmp/escape.png", "sub/x.png",
                                  ".hidden.png", "notes.txt"])
def test_uploads_take_a_plain_supported_name_inside_the_folder(client, folder, name):
    answer = client.post("/api/upload", params={"name": name}, content=b"data")
    assert answer.status_code == 400, name
    assert not (folder.parent / "escape.png").exists() and not Path("/tmp/escape.png").exists()


def test_an_upload_through_a_symlink_out_is_refused(client, folder, tmp_path):
    outside = tmp_path / "outside.png"
    (folder / "link.png").symlink_to(outside)
    assert client.post("/api/upload", params={"name": "link.png"}, content=b"x").status_code == 400
    assert not outside.exists()


def test_a_symlinked_file_out_of_the_folder_is_listed_not_read(tmp_path):
    from .conftest import write_folder

    other = write_folder(tmp_path / "other")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked.nii.gz").symlink_to(other / "phantom.nii.gz")
    client, _ = client_for(root)
    client.headers["X-Studio-Token"] = TOKEN
    (case,) = client.get("/api/cases").json()["cases"]
    assert "outside the studio folder" in case["error"]
    assert client.get("/api/cases/linked/image").status_code == 400


def test_uploads_are_limited_in_size(folder):
    client, _ = client_for(folder, max_upload_mb=1)
    client.headers["X-Studio-Token"] = TOKEN
    answer = client.post("/api/upload", params={"name": "big.png"}, content=b"x" * (1024 * 1024 + 1))
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]
    assert not (folder / "big.png").exists()


def test_an_uploaded_corrupt_image_is_listed_with_its_error(client, folder):
    answer = client.post("/api/upload", params={"name": "new.png"}, content=b"not a png")
    assert answer.status_code == 200 and answer.json()["error"]
    assert (folder / "new.png").is_file()
    assert client.post("/api/upload", params={"name": "new.png"}, content=b"x").status_code == 400  # exists


def test_bad_requests_get_a_4xx_with_the_reason(client):
    bad_json = client.post("/api/cases/phantom/prompt", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 422 and bad_json.json()["detail"]
    wrong_shape = client.post("/api/cases/phantom/prompt", json={"index": "three"})
    assert wrong_shape.status_code == 422
    outside = client.post("/api/cases/phantom/prompt", json={"index": 99, "points": [[1, 1, 1]]})
    assert outside.status_code == 400 and "outside" in outside.json()["detail"]
    assert client.get("/api/cases/nobody").status_code == 404
    assert client.get("/api/cases/phantom/image", params={"plane": "oblique"}).status_code == 400
    assert client.get("/api/cases/phantom/image", params={"index": 12}).status_code == 400
    assert client.get("/api/cases/phantom/labels/secret").status_code == 404
    assert client.put("/api/cases/phantom/edits?index=0&version=0", content=b"short").status_code == 400
    too_high = np.full(32 * 32, 7, dtype=np.uint8).tobytes()
    assert "not a class" in client.put("/api/cases/phantom/edits?index=0&version=0", content=too_high).json()["detail"]
    assert client.post("/api/train", json={}).status_code == 400  # nothing labelled yet
    assert client.post("/api/export").status_code == 400


def test_a_bug_answers_one_line_and_logs_no_traceback(folder, caplog, capsys):
    client, studio = client_for(folder)
    client.headers["X-Studio-Token"] = TOKEN

    def broken(case_id):
        raise RuntimeError("boom")

    studio.info = broken
    with caplog.at_level(logging.ERROR, logger="samadapt.studio"):
        answer = client.get("/api/cases/phantom")
    assert answer.status_code == 500 and answer.json()["detail"] == "internal error: RuntimeError: boom"
    assert "Traceback" not in caplog.text + capsys.readouterr().err
    assert "boom" in caplog.text


def test_edits_keep_a_version_conflicts_are_refused_and_everything_comes_back(folder):
    client, _ = client_for(folder)
    client.headers["X-Studio-Token"] = TOKEN
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[8:16, 4:20] = 1
    assert client.put("/api/cases/phantom/edits?index=3&version=0", content=labels.tobytes()).json() == {"version": 1}
    stale = client.put("/api/cases/phantom/edits?index=5&version=0", content=labels.tobytes())  # a second tab
    assert stale.status_code == 409 and stale.json()["version"] == 1
    assert client.put("/api/cases/phantom/edits?index=5&version=1", content=labels.tobytes()).json() == {"version": 2}
    history = sorted(p.name for p in (folder / ".samadapt-studio" / "edits").rglob("*.png"))
    assert history == ["z0003.v000001.png", "z0005.v000002.png"]

    reopened, _ = client_for(folder)  # a new server on the same folder
    reopened.headers["X-Studio-Token"] = TOKEN
    info = reopened.get("/api/cases/phantom").json()
    assert info["version"] == 2 and info["labelled_slices"] == [3, 5]
    assert info["pixel_mm"] == {"axial": [1.5, 1.5], "coronal": [3.0, 1.5], "sagittal": [3.0, 1.5]}  # the affine's
    back = reopened.get("/api/cases/phantom/labels/edits", params={"index": 3})
    assert np.array_equal(np.frombuffer(back.content, np.uint8).reshape(32, 32), labels)
    assert back.headers["X-Version"] == "2"
    # the other planes show the same labels
    coronal = reopened.get("/api/cases/phantom/labels/edits", params={"plane": "coronal", "index": 20})  # display rows 8..15 = y 16..23
    assert coronal.headers["X-Rows"] == "12" and np.frombuffer(coronal.content, np.uint8).any()


def test_a_dataset_folder_shows_its_reference_labels(tmp_path):
    from samadapt.data.phantoms import generate_phantoms

    description = generate_phantoms(tmp_path / "data", n=2, size=32, kind="anatomy", dims="3d", depth=8)
    client, studio = client_for(description.parent)
    client.headers["X-Studio-Token"] = TOKEN
    listing = client.get("/api/cases").json()
    assert listing["classes"] == studio.classes and len(studio.classes) >= 1
    case = listing["cases"][0]
    assert case["labelled"] and client.get(f"/api/cases/{case['id']}").json()["has_reference"]
    reference = client.get(f"/api/cases/{case['id']}/labels/reference", params={"index": 4})
    assert reference.status_code == 200 and np.frombuffer(reference.content, np.uint8).max() >= 1


def _check_dataset(path: Path) -> None:
    from samadapt.data.check import check_dataset
    from samadapt.data.dataset import load_dataset

    report = check_dataset(load_dataset(path))
    assert not report.errors, [str(e) for e in report.errors]


def test_the_export_of_a_volume_is_a_dataset_in_the_input_geometry(tmp_path):
    import nibabel as nib

    from .conftest import write_folder

    folder = write_folder(tmp_path / "clean")
    (folder / "broken.nii.gz").unlink()
    client, _ = client_for(folder)
    client.headers["X-Studio-Token"] = TOKEN
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[8:16, 4:20] = 1
    client.put("/api/cases/phantom/edits?index=3&version=0", content=labels.tobytes())
    result = client.post("/api/export").json()
    assert result["labels"] == ["labels/phantom.nii.gz"] and result["predictions"] == []
    exported = nib.load(folder / ".samadapt-studio" / "export" / "labels" / "phantom.nii.gz")
    source = nib.load(folder / "phantom.nii.gz")
    assert exported.shape == source.shape and np.allclose(exported.affine, source.affine)
    assert int(np.asarray(exported.dataobj).sum()) == int(labels.sum())
    _check_dataset(Path(result["dataset"]))


def test_2d_images_are_edited_and_exported_as_index_pngs(tmp_path):
    from samadapt.data.io import read_image, write_image_png

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image_png(folder / name, rng.integers(0, 255, (24, 40, 3), dtype=np.uint8))
    client, _ = client_for(folder, classes="lesion,vessel")
    client.headers["X-Studio-Token"] = TOKEN
    info = client.get("/api/cases/a").json()
    assert info["display_hw"] == [24, 40] and info["planes"] == {"axial": 1}
    assert client.get("/api/cases/a/image", params={"plane": "coronal"}).status_code == 400
    labels = np.zeros((24, 40), dtype=np.uint8)
    labels[2:6, 3:30], labels[10:20, 5:9] = 1, 2
    assert client.put("/api/cases/a/edits?index=0&version=0", content=labels.tobytes()).status_code == 200
    result = client.post("/api/export").json()
    export = folder / ".samadapt-studio" / "export"
    assert np.array_equal(read_image(export / "labels" / "a.png", keep_indices=True), labels)
    _check_dataset(Path(result["dataset"]))
