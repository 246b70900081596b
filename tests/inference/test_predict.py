"""`samadapt predict` end to end on tiny generated images, and its bad-input behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samadapt.cli import main

TINY = ["--model", "sam2-hiera-tiny", "--image-size", "256"]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 120)) * 255).astype(np.uint8)).save(folder / "grey.png")
    Image.fromarray((rng.random((64, 48, 3)) * 255).astype(np.uint8)).save(folder / "colour.jpg")
    # 16-bit TIFF, as microscopy and some scanners write them
    Image.fromarray((rng.random((70, 70)) * 4000).astype(np.uint16)).save(folder / "deep.tif")
    return folder


def test_predict_folder_writes_mask_and_overlay_of_input_size(images: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert main(["predict", "--input", str(images), "--out", str(out), *TINY]) == 0
    for src in images.iterdir():
        width, height = Image.open(src).size
        mask = np.asarray(Image.open(out / f"{src.stem}_mask.png"))
        overlay = Image.open(out / f"{src.stem}_overlay.png")
        assert mask.shape == (height, width)
        assert set(np.unique(mask)) <= {0, 255}
        assert overlay.size == (width, height) and overlay.mode == "RGB"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")]  # no staging left over


@pytest.mark.parametrize("prompt", [["--box", "10", "10", "60", "50"], ["--point", "30", "40"]])
def test_predict_with_prompts(images: Path, tmp_path: Path, prompt: list[str], capsys):
    out = tmp_path / "out"
    assert main(["predict", "--input", str(images / "grey.png"), "--out", str(out), *TINY, *prompt]) == 0
    assert (out / "grey_mask.png").is_file()
    # random weights are said once, loudly, with where the real ones are
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samadapt: warning: sam2-hiera-tiny has RANDOM, UNTRAINED weights")
    assert "https://github.com/facebookresearch/sam2" in err[0] and "huggingface.co/facebook/sam2-hiera-tiny" in err[0]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samadapt: error:"), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(
    "make_args, fragment",
    [
        (lambda d: ["--input", str(d / "missing.png")], "missing.png: input not found"),
        (lambda d: ["--input", str(d / "grey.png"), "--box", "10", "10", "500", "50"], "outside"),
        (lambda d: ["--input", str(d / "grey.png"), "--box", "50", "10", "10", "50"], "x0 < x1"),
        (lambda d: ["--input", str(d / "grey.png"), "--point", "-1", "5"], "--point -1 5"),
        (lambda d: ["--input", str(d / "grey.png"), "--model", "sam2-hiera-tinyy"], "sam2-hiera-tinyy"),
        (lambda d: ["--input", str(d / "grey.png"), "--image-size", "0"], "--image-size 0"),
        (lambda d: ["--input", str(d / "grey.png"), "--init", f"sam2:{d / 'nope.pt'}"], "nope.pt"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(images, tmp_path, capsys, make_args, fragment):
    out = tmp_path / "out"
    # Options given later win, so each case's own values override the tiny defaults.
    assert main(["predict", *TINY, *make_args(images), "--out", str(out)]) == 2
    assert fragment in _one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_image_in_folder_leaves_no_partial_output(images, tmp_path, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    out = tmp_path / "out"
    assert main(["predict", "--input", str(images), "--out", str(out), *TINY]) == 2
    assert "broken.png" in _one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_unsupported_extension(tmp_path, capsys):
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"1234")
    assert main(["predict", "--input", str(path), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "scan.xyz" in _one_line_error(capsys)
