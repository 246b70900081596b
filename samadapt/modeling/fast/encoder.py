"""`FastEncoder`: a drop-in for `SegmentAnything.encode` at inference, and `accelerate(model)` to
route a model's `encode` through it.

Three levels, each falling back to the one below with a one-line notice on stderr:

1. `torch.compile` (inductor; on CPU it needs a C++ compiler) of the fast SAM2 encoder, with
   inductor's weight freezing so matrix products use pre-packed weights and element-wise work
   (layer norms, GELU, adds, window copies) is fused;
2. the fast SAM2 encoder in eager mode (`hiera.encode_sam2`), with oneDNN matrix products on CPU
   when the build has them;
3. the plain `SegmentAnything.encode` (SAM's ViT, unsupported structures, or whenever autograd is
   needed: the fast path updates tensors in place).

`precision="bf16"` runs the fast encoder under bf16 autocast (CPU or CUDA) and hands fp32 features
to the decoder: faster on CPUs with native bf16 matrix units, at a much larger feature error
than fp32 (docs/benchmarks.md, "Fast SAM2 encoder", has the measured speed and error).

Images are encoded one at a time: one compiled graph then serves every batch size, and at
S ≥ 256 a single image already has thousands of tokens per matrix product, so batching gains
little on CPU.
"""

from __future__ import annotations

import shutil
import sys

import torch

from samadapt.modeling.fast.hiera import HieraDerived, check_supported, encode_sam2, onednn_linear, plain_linear


def notice(message: str) -> None:
    """One line on stderr: the fast path degrades quietly but never silently."""
    print(f"samadapt: {message}", file=sys.stderr, flush=True)


def onednn_available() -> bool:
    """oneDNN's fused linear works in this build (probed once on a tiny input)."""
    global _ONEDNN
    if _ONEDNN is None:
        try:
            x, w, b = torch.ones(2, 4), torch.ones(3, 4), torch.zeros(3)
            _ONEDNN = bool(torch.backends.mkldnn.is_available()) and torch.allclose(onednn_linear(x, w, b), x @ w.t())
        except Exception:  # missing op or kernel: the plain product is used
            _ONEDNN = False
    return _ONEDNN


_ONEDNN: bool | None = None

PRECISIONS = ("fp32", "bf16")


def native_bf16_cpu() -> bool:
    """oneDNN reports bf16 matrix support on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # op absent in this build
        return False


def compile_unavailable_reason() -> str | None:
    """Why `torch.compile` cannot run here (None when it can, as far as can be told up front)."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        from torch._inductor import cpp_builder

        compiler = cpp_builder.get_cpp_compiler()
    except Exception as exc:  # inductor missing or unconfigurable
        return f"inductor unavailable ({type(exc).__name__})"
    if not shutil.which(compiler):
        return f"no C++ compiler ({compiler}) for inductor"
    return None


class FastEncoder:
    """Callable with `SegmentAnything.encode`'s contract: (B, 3, S, S) -> `ImageFeatures`.

    Args:
        model: a `SegmentAnything`; its parameters are used as they are (nothing is copied), and
            weights loaded later are picked up (compiled code is rebuilt, derived tensors refreshed).
        compile: try `torch.compile` first (the first call per input size then compiles, which
            takes minutes on a CPU, see docs/benchmarks.md; later processes reuse inductor's
            on-disk cache).
        precision: "fp32" (exact up to rounding) or "bf16" (autocast; faster, less exact).
    """

    def __init__(self, model, compile: bool = True, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.model = model
        self.precision = precision
        self.reason: str | None = None  # why the fast SAM2 path is off (None: on)
        try:
            check_supported(model)
        except NotImplementedError as exc:
            self.reason = str(exc)
        self.derived = HieraDerived(model) if self.reason is None else None
        self.compile = compile and self.reason is None
        self._compiled = None
        self._compiled_key = None

    @property
    def mode(self) -> str:
        """"compiled", "eager" (fast path without compilation) or "plain" (the model's own encode)."""
        if self.reason is not None:
            return "plain"
        return "compiled" if self.compile else "eager"

    def _linear(self, device: torch.device):
        # oneDNN's fused linear is not autocast-aware: under bf16 the autocast `F.linear` casts
        use_onednn = device.type == "cpu" and self.precision == "fp32" and onednn_available()
        return onednn_linear if use_onednn else plain_linear

    def _weights_key(self, device: torch.device) -> tuple:
        # frozen (constant-folded) weights go stale if any parameter changes after compiling
        params = self.model.hf.vision_encoder.parameters()
        return (device.type, tuple((p._version, p.data_ptr()) for p in params))

    def _compiled_fn(self, device: torch.device):
        key = self._weights_key(device)
        if self._compiled is None or key != self._compiled_key:
            reason = compile_unavailable_reason() if device.type == "cpu" else None
            if reason is not None:
                raise RuntimeError(reason)
            # freezing folds the (inference-only) weights into the graph: pre-packed matrix
            # products on CPU; plain linear here so that inductor, not eager oneDNN, picks kernels
            self._compiled = torch.compile(
                _encode_plain_linear, dynamic=False, options={"freezing": True}
            )
            self._compiled_key = key
        return self._compiled

    def _one(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = pixels.shape[-1]
        inputs = self.derived.refresh(size).tensors()
        if self.compile:
            try:
                return self._compiled_fn(pixels.device)(self.model, pixels, *inputs)
            except Exception as exc:  # any compiler/backend failure: eager fast path from now on
                self.compile = False
                self._compiled = None
                detail = " ".join(str(exc).split())[:160]
                notice(f"torch.compile unavailable, using the eager fast encoder ({type(exc).__name__}: {detail})")
        return encode_sam2(self.model, pixels, *inputs, linear=self._linear(pixels.device))

    def __call__(self, pixel_values: torch.Tensor):
        from samadapt.modeling.segment_anything import ImageFeatures

        model = self.model
        needs_grad = torch.is_grad_enabled() and (
            pixel_values.requires_grad or any(p.requires_grad for p in model.hf.vision_encoder.parameters())
        )
        if self.reason is not None or needs_grad or model.training:
            return _plain_encode(model, pixel_values)
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[-2:]) != (
            model.image_size, model.image_size
        ):
            return _plain_encode(model, pixel_values)  # raises the model's own shape error
        bf16 = self.precision == "bf16"
        with torch.no_grad(), torch.autocast(pixel_values.device.type, dtype=torch.bfloat16, enabled=bf16):
            parts = [self._one(pixel_values[i : i + 1]) for i in range(pixel_values.shape[0])]
        embedding, s4, s8 = (torch.cat(level) if len(parts) > 1 else level[0] for level in zip(*parts))
        if bf16:  # the decoder and everything after it stay in fp32
            embedding, s4, s8 = (t.float() for t in (embedding, s4, s8))
        return ImageFeatures(embedding, (s4, s8))


def _encode_plain_linear(model, pixels, *inputs):
    return encode_sam2(model, pixels, *inputs, linear=plain_linear)


def _plain_encode(model, pixel_values):
    """The model's class-level `encode` (bypasses an instance-level override set by `accelerate`)."""
    return type(model).encode(model, pixel_values)


def accelerate(model, *, compile: bool = True, fast: bool = True, announce: bool = True, precision: str = "fp32"):
    """Route `model.encode` through a `FastEncoder` (in place; returns the model).

    `fast=False` leaves the model untouched (the plain path); `precision` is `FastEncoder`'s. Models
    the fast path does not cover (SAM's ViT) keep their plain `encode`, with a one-line notice when
    `announce`.
    """
    if not fast:
        return model
    encoder = FastEncoder(model, compile=compile, precision=precision)
    if encoder.reason is not None:
        if announce:
            notice(f"fast encoder not used: {encoder.reason}")
        return model
    if precision == "bf16" and announce and not native_bf16_cpu():
        notice("this CPU has no native bf16 matrix units: --precision bf16 may be slower than fp32")
    # an instance attribute shadows the method; not an nn.Module, so state_dict is unaffected
    model.__dict__["encode"] = encoder
    model.__dict__["fast_encoder"] = encoder
    return model
