"""The fast SAM2 encoder equals the plain one (random weights, two sizes), falls back cleanly, and
is reachable (and avoidable) from `samadapt predict`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from samadapt.modeling.fast import FastEncoder, accelerate
from samadapt.modeling.fast import encoder as fast_encoder
from samadapt.modeling.registry import build_model
from tests.modeling.meta_reference import randomise, relative_error

TOLERANCE = 1e-4


def _model(size: int, seed: int = 0):
    model = build_model("sam2-hiera-tiny", size).eval()
    randomise(model.hf, seed)  # every tensor non-trivial, zero-initialised position embeddings too
    return model


def _errors(actual, expected) -> list[float]:
    pairs = zip((actual.embedding, *actual.high_res), (expected.embedding, *expected.high_res))
    return [relative_error(a, b) for a, b in pairs]


@pytest.fixture(scope="module")
def model_256():
    return _model(256)


@pytest.mark.parametrize("size, batch", [(256, 2), (512, 1)])
@pytest.mark.parametrize("onednn", [True, False])
def test_fast_equals_plain(size, batch, onednn, monkeypatch):
    monkeypatch.setattr(fast_encoder, "_ONEDNN", None if onednn else False)
    model = _model(size)
    pixels = torch.randn(batch, 3, size, size)
    encoder = FastEncoder(model, compile=False)
    with torch.inference_mode():
        expected, actual = model.encode(pixels), encoder(pixels)
    assert encoder.mode == "eager"
    assert actual.embedding.shape == expected.embedding.shape == (batch, 256, size // 16, size // 16)
    assert [t.shape for t in actual.high_res] == [t.shape for t in expected.high_res]
    assert all(t.is_contiguous() for t in (actual.embedding, *actual.high_res))
    assert max(_errors(actual, expected)) <= TOLERANCE


def test_weights_loaded_after_acceleration_are_used(model_256):
    model = accelerate(_model(256, seed=1), compile=False)
    pixels = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        model.encode(pixels)  # derived tensors (position embedding, folded projections) now cached
    model.hf.load_state_dict(model_256.hf.state_dict())
    with torch.inference_mode():
        assert max(_errors(model.encode(pixels), model_256.encode(pixels))) <= TOLERANCE


def test_accelerate_keeps_state_dict_and_no_fast_is_untouched(model_256):
    keys = list(model_256.state_dict())
    plain = build_model("sam2-hiera-tiny", 256)
    assert accelerate(plain, fast=False) is plain and "encode" not in plain.__dict__
    fast = accelerate(build_model("sam2-hiera-tiny", 256), compile=False)
    assert isinstance(fast.encode, FastEncoder) and list(fast.state_dict()) == keys


def test_autograd_and_training_use_the_plain_path(model_256):
    model = accelerate(_model(256), compile=False)
    pixels = torch.randn(1, 3, 256, 256)
    features = model.encode(pixels)  # parameters require grad: the plain (differentiable) path
    assert features.embedding.grad_fn is not None
    with pytest.raises(ValueError, match="expects pixel values"):
        model.encode(torch.randn(1, 3, 128, 128))


def test_unsupported_model_keeps_plain_encode_with_notice(capsys):
    class Other(torch.nn.Module):
        family, name = "sam", "sam-vit-base"

    model = Other()
    assert accelerate(model) is model and "encode" not in model.__dict__
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fast encoder not used" in err[0]


def test_compile_unavailable_falls_back_with_one_line_notice(model_256, monkeypatch, capsys):
    monkeypatch.setattr(fast_encoder, "compile_unavailable_reason", lambda: "no C++ compiler (g++) for inductor")
    encoder = FastEncoder(model_256, compile=True)
    pixels = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        actual, expected = encoder(pixels), model_256.encode(pixels)
    assert encoder.mode == "eager"
    assert max(_errors(actual, expected)) <= TOLERANCE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch.compile unavailable" in err[0] and "no C++ compiler" in err[0]
    with torch.inference_mode():
        encoder(pixels)  # no second notice
    assert capsys.readouterr().err == ""


def test_compile_failure_at_first_call_falls_back(model_256, monkeypatch, capsys):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("inductor: C++ compile error\nline two")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(fast_encoder, "compile_unavailable_reason", lambda: None)
    encoder = FastEncoder(model_256, compile=True)
    pixels = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        assert max(_errors(encoder(pixels), model_256.encode(pixels))) <= TOLERANCE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: inductor: C++ compile error line two" in err[0]


@pytest.mark.slow
def test_compiled_equals_plain(model_256):
    if fast_encoder.compile_unavailable_reason() is not None:
        pytest.skip(fast_encoder.compile_unavailable_reason())
    encoder = FastEncoder(model_256, compile=True)
    pixels = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        actual, expected = encoder(pixels), model_256.encode(pixels)
    assert encoder.mode == "compiled"
    assert max(_errors(actual, expected)) <= TOLERANCE


@pytest.mark.parametrize("flags, mode", [([], "eager"), (["--no-compile"], "eager"), (["--no-fast"], "plain")])
def test_predict_cli_fast_flags(tmp_path, monkeypatch, flags, mode):
    from samadapt.cli import main
    from samadapt.inference import predict as predict_module

    seen = []
    original = predict_module.segment

    def spy(model, *args, **kwargs):
        encoder = model.__dict__.get("fast_encoder")
        seen.append("plain" if encoder is None else encoder.mode)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(predict_module, "segment", spy)
    image = tmp_path / "grey.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)).save(image)
    args = ["predict", "--input", str(image), "--out", str(tmp_path / "out"), "--model", "sam2-hiera-tiny",
            "--image-size", "256", *flags]
    assert main(args) == 0
    assert seen == [mode]
    assert (tmp_path / "out" / "grey_mask.png").is_file()


def test_bf16_precision_is_close_and_hands_fp32_to_the_decoder(model_256):
    # bf16 keeps 8 mantissa bits: ~1e-2 relative error, two orders above the fp32 path but small
    # enough that the decoder's masks barely move
    encoder = FastEncoder(model_256, compile=False, precision="bf16")
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        actual, expected = encoder(pixels), model_256.encode(pixels)
        masks = model_256.decode(actual).logits > 0
        reference = model_256.decode(expected).logits > 0
    assert all(t.dtype == torch.float32 for t in (actual.embedding, *actual.high_res))
    errors = _errors(actual, expected)
    assert 1e-4 < max(errors) < 5e-2  # really ran in bf16, and stayed close
    assert (masks == reference).float().mean() > 0.98


def test_bf16_is_rejected_by_name_and_without_fast_path(tmp_path):
    from samadapt.cli import main

    with pytest.raises(ValueError, match="fp16"):
        FastEncoder(build_model("sam2-hiera-tiny", 256), precision="fp16")
    image = tmp_path / "grey.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(image)
    base = ["predict", "--input", str(image), "--out", str(tmp_path / "out"), "--image-size", "256"]
    assert main([*base, "--precision", "fp16"]) == 2
    assert main([*base, "--precision", "bf16", "--no-fast"]) == 2
    assert not (tmp_path / "out").exists()
