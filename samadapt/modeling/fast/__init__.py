"""Fast inference for SAM2's image encoder: the same arithmetic as the plain model with fewer
copies and allocations, oneDNN matrix products, and optionally `torch.compile` (see `encoder`)."""

from samadapt.modeling.fast.encoder import FastEncoder, accelerate, compile_unavailable_reason

__all__ = ["FastEncoder", "accelerate", "compile_unavailable_reason"]
