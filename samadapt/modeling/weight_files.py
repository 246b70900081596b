"""Weight files read into transformers' key names, with where they came from (`LoadedWeights`).

The primitives every reader shares: safe `torch.load`, safetensors, and the record of what a file
holds. `loading.read_weights` recognises the formats; `model_folder` reads samadapt's own folders.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samadapt.errors import UserError


@dataclass
class LoadedWeights:
    """A state dict in transformers' key names plus what is known about where it came from.

    variant: registry name the weights belong to (None when it cannot be told, e.g. a bare
    safetensors file); image_size: the size the weights were trained/saved at, if known.
    """

    state_dict: dict[str, torch.Tensor]
    source_format: str
    path: Path
    variant: str | None = None
    image_size: int | None = None
    unused: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    family: str | None = None
    # When the variant cannot be pinned down (SAM2 vs SAM2.1 without video keys): the names it may be.
    candidates: list[str] = field(default_factory=list)


def read_torch_file(path: Path):
    """`torch.load(weights_only=True)` with every failure turned into a `UserError` naming `path`."""
    if not path.is_file():
        raise UserError("weights file not found", path)
    if path.stat().st_size == 0:
        raise UserError("weights file is empty (0 bytes)", path)
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # do not echo torch's advice to retry with weights_only=False
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise UserError(
            "refusing to load: the file holds Python objects other than tensors, which could run code"
            + (f" ({found.group(1)})" if found else ""), path) from None
    except Exception as exc:  # RuntimeError (truncated zip), EOFError, ...
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"cannot read as a PyTorch checkpoint with safe (weights-only) loading: "
            f"{type(exc).__name__}: {reason}",
            path,
        ) from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError("weights file not found", path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise UserError(f"cannot read safetensors file: {type(exc).__name__}: {exc}", path) from None
