"""`samadapt export --format onnx` and `predict --backend onnxruntime`: parity with PyTorch in fp32
(relative error <= 1e-4) at a dynamic batch, and the same masks as the torch backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

TOLERANCE = 1e-4


def relative_error(actual: np.ndarray, expected: torch.Tensor) -> float:
    expected = expected.detach().numpy()
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    """A saved run (Hiera-T at 64 px, 2 classes, presence gate, non-trivial prompts) and its export."""
    from samadapt.export.onnx_export import export_onnx
    from samadapt.finetune.runs import save_run_model
    from samadapt.modeling.class_prompts import ClassPromptSegmenter
    from samadapt.modeling.registry import build_model

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("onnx")
    model = ClassPromptSegmenter(build_model("sam2-hiera-tiny", 64), ["a", "b"], tokens_per_class=2, presence=True)
    save_run_model(model.eval(), root / "run", {"loss": "dice"}, {"command": "finetune"})
    meta = export_onnx(root / "run", root / "onnx")
    return root, meta


def test_export_of_a_run_matches_pytorch_in_onnxruntime_at_another_batch(run_and_export):
    from samadapt.finetune.runs import load_finetune_run
    from samadapt.inference.onnx_backend import OnnxSegmenter

    root, meta = run_and_export
    assert meta["kind"] == "class-prompts" and meta["classes"] == ["a", "b"] and meta["model"] == "sam2-hiera-tiny"
    assert meta["parity"]["encoder_relative_error"] <= TOLERANCE
    assert meta["parity"]["decoder_relative_error"] <= TOLERANCE
    model = load_finetune_run(root / "run").model
    pixels = torch.randn(3, 3, 64, 64)  # traced with one image: the batch axis is dynamic
    with torch.no_grad():
        expected = model(pixels)  # (3, 2, 16, 16), presence-gated
    actual = OnnxSegmenter(root / "onnx").logits(pixels.numpy())
    assert actual.shape == (3, 2, 16, 16)
    assert relative_error(actual, expected) <= TOLERANCE


def test_predict_with_onnxruntime_writes_the_masks_of_the_torch_backend(run_and_export, tmp_path, capsys):
    from samadapt.cli import main

    root, _ = run_and_export
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (80, 60), dtype=np.uint8)).save(images / f"i{k}.png")
    assert main(["predict", "--backend", "onnxruntime", "--model", str(root / "onnx"), "--input", str(images),
                 "--out", str(tmp_path / "ort")]) == 0
    assert main(["predict", "--model", str(root / "run"), "--input", str(images), "--out", str(tmp_path / "pt")]) == 0
    capsys.readouterr()
    assert (tmp_path / "ort" / "classes.json").read_text() == (tmp_path / "pt" / "classes.json").read_text()
    for k in range(2):
        ort_mask = np.array(Image.open(tmp_path / "ort" / f"i{k}_mask.png"))
        torch_mask = np.array(Image.open(tmp_path / "pt" / f"i{k}_mask.png"))
        assert ort_mask.shape == (80, 60)
        assert (ort_mask == torch_mask).mean() >= 0.999  # a random model: a few pixels sit at logit 0


@pytest.mark.slow
def test_fewshot_run_exports_its_prototype_tokens(tmp_path):
    from samadapt.export.onnx_export import export_onnx
    from samadapt.fewshot.predict import load_fewshot_run
    from samadapt.inference.onnx_backend import OnnxSegmenter
    from samadapt.modeling.model_folder import save_model_folder
    from samadapt.modeling.prototypes import PrototypePrompter, SupportPrototypes
    from samadapt.modeling.registry import build_model

    torch.manual_seed(2)
    prototypes = SupportPrototypes(torch.randn(2, 3, 256), torch.randn(3, 256))
    extra = {f"prompter.{k}": v for k, v in PrototypePrompter(256).state_dict().items()}
    save_model_folder(build_model("sam2-hiera-tiny", 64), tmp_path / "run" / "model", {"command": "fewshot train"},
                      extra_tensors={**extra, **prototypes.as_tensors()}, extra_config={"fewshot": {"classes": ["a", "b"]}})
    meta = export_onnx(tmp_path / "run", tmp_path / "onnx")
    assert meta["kind"] == "class-prompts" and meta["classes"] == ["a", "b"]
    run = load_fewshot_run(tmp_path / "run")
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = run.segmenter(run.segmenter.sam.encode(pixels), run.prototypes)  # (2, 2, 16, 16)
    assert relative_error(OnnxSegmenter(tmp_path / "onnx").logits(pixels.numpy()), expected) <= TOLERANCE


@pytest.mark.slow
def test_plain_weights_export_a_box_decoder(run_and_export, tmp_path):
    from samadapt.export.onnx_export import export_onnx
    from samadapt.inference.onnx_backend import OnnxSegmenter
    from samadapt.modeling.loading import load_model
    from samadapt.modeling.model_folder import save_model_folder

    torch.manual_seed(1)
    save_model_folder(load_model("sam2-hiera-tiny", image_size=64), tmp_path / "weights", {"command": "test"})
    meta = export_onnx(tmp_path / "weights", tmp_path / "onnx")
    assert meta["kind"] == "box" and meta["classes"] is None
    assert max(meta["parity"]["encoder_relative_error"], meta["parity"]["decoder_relative_error"]) <= TOLERANCE
    base = load_model(weights=tmp_path / "weights")
    base.mask_decoder.dynamic_multimask_via_stability = False
    pixels, boxes = torch.randn(1, 3, 64, 64), torch.tensor([[[5.0, 8.0, 40.0, 50.0]]])
    with torch.no_grad():
        expected = base.decode(base.encode(pixels), boxes=boxes).logits[:, :, 0]
    assert relative_error(OnnxSegmenter(tmp_path / "onnx").logits(pixels.numpy(), boxes.numpy()), expected) <= TOLERANCE


def test_a_file_from_another_export_is_named(run_and_export, tmp_path):
    import shutil

    from samadapt.errors import UserError
    from samadapt.export.onnx_folder import read_onnx_folder, stamp_file

    root, _ = run_and_export
    shutil.copytree(root / "onnx", tmp_path / "mixed")
    stamp_file(tmp_path / "mixed" / "decoder.onnx", "sam2-hiera-small", 64, "decoder")  # copied in from another export
    with pytest.raises(UserError, match="decoder.onnx was exported from sam2-hiera-small"):
        read_onnx_folder(tmp_path / "mixed")


@pytest.mark.slow
def test_int8_encoder_is_opt_in_smaller_and_recorded(run_and_export, tmp_path):
    from samadapt.export.onnx_export import export_onnx
    from samadapt.inference.onnx_backend import OnnxSegmenter

    root, fp32 = run_and_export
    meta = export_onnx(root / "run", tmp_path / "int8", quantize="int8")
    assert fp32["encoder_quantization"] == "none" and meta["encoder_quantization"] == "int8"
    assert (tmp_path / "int8" / "encoder.onnx").stat().st_size < (root / "onnx" / "encoder.onnx").stat().st_size / 3
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == sorted(p.name for p in (root / "onnx").iterdir())
    assert 0 < meta["parity"]["encoder_relative_error"] < 0.5 and 0 <= meta["parity"]["mask_iou"] <= 1
    assert OnnxSegmenter(tmp_path / "int8").logits(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 2, 16, 16)
