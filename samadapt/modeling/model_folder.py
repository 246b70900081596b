"""samadapt's model folder (the format every command saves a model in): weights, identity,
provenance, integrity. Training state (optimiser, step, RNG) lives elsewhere, in
`samadapt.engine.checkpoint`; `loading.load_model_folder` rebuilds the model saved here.

Layout of a model folder:
    model.safetensors   the wrapped model's state dict in transformers key names (so the file
                        also loads with `Sam2Model`/`SamModel.load_state_dict`)
    extra.safetensors   optional tensors a stage adds (learned prompts, prototypes, heads)
    samadapt.json       variant, family, image size, extra config, provenance and the sha256 of
                        each weights file, verified on load

The folder is staged next to its destination and moved into place file by file with
`samadapt.json` last, so an interrupted save never produces a folder that loads: either the JSON
is missing or its hashes no longer match.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samadapt.engine.atomic import sha256_file, staged_dir
from samadapt.errors import UserError
from samadapt.modeling.weight_files import LoadedWeights, read_safetensors

FORMAT = "samadapt-checkpoint"
FORMAT_VERSION = 1
METADATA_FILE = "samadapt.json"
WEIGHTS_FILE = "model.safetensors"
EXTRA_FILE = "extra.safetensors"


@dataclass
class ModelFolder:
    """A loaded model folder: the model plus everything saved beside it."""

    model: object  # SegmentAnything
    metadata: dict
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def provenance(self) -> dict:
        return self.metadata.get("provenance", {})

    @property
    def extra_config(self) -> dict:
        return self.metadata.get("extra_config", {})


def _plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (SAM ties two copies of one matrix).
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_model_folder(
    model,
    directory: str | Path,
    provenance: dict,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra_config: dict | None = None,
) -> Path:
    """Write `model` (a `SegmentAnything`) to `directory` atomically; returns the folder.

    Args:
        provenance: JSON-serialisable facts about how the weights were made, e.g.
            {"command": "...", "data": "...", "parent": "<checkpoint or Meta file>"}; the save
            time is added as "saved_at".
        extra_tensors: name -> tensor, stored in extra.safetensors (e.g. class prompts (C, T, 256)).
        extra_config: JSON-serialisable settings a later stage needs to rebuild its parts.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    try:
        json.dumps(provenance)
        json.dumps(extra_config or {})
    except TypeError as exc:
        raise UserError(f"provenance/extra_config must be JSON-serialisable: {exc}") from None
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "family": model.family,
        "image_size": model.image_size,
        "extra_config": dict(extra_config or {}),
        "provenance": {**dict(provenance), "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat()},
        "files": {},
    }
    with staged_dir(directory) as stage:
        save_file(_plain_tensors(model.hf.state_dict()), str(stage / WEIGHTS_FILE), metadata={"format": "pt"})
        metadata["files"][WEIGHTS_FILE] = sha256_file(stage / WEIGHTS_FILE)
        if extra_tensors:
            save_file(_plain_tensors(extra_tensors), str(stage / EXTRA_FILE), metadata={"format": "pt"})
            metadata["files"][EXTRA_FILE] = sha256_file(stage / EXTRA_FILE)
        (stage / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return directory


def read_metadata(directory: str | Path) -> dict:
    """Parse and check `samadapt.json` (format, required fields); raises `UserError` naming it."""
    path = Path(directory) / METADATA_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("not a samadapt checkpoint (samadapt.json is missing)", path) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read checkpoint metadata: {exc}", path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"not a samadapt checkpoint (format is not {FORMAT!r})", path)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"checkpoint format version {meta['format_version']} is newer than this samadapt", path)
    for key in ("model", "family", "image_size", "files"):
        if key not in meta:
            raise UserError(f"checkpoint metadata lacks {key!r}", path)
    if WEIGHTS_FILE not in meta["files"]:
        raise UserError(f"checkpoint metadata has no sha256 for {WEIGHTS_FILE}", path)
    return meta


def verified_file(directory: Path, meta: dict, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise UserError("checkpoint file is missing", path)
    digest = sha256_file(path)
    if digest != meta["files"][name]:
        raise UserError(
            f"sha256 mismatch: file has {digest[:12]}…, samadapt.json records {meta['files'][name][:12]}… "
            "(the file was changed or partly written)", path
        )
    return path


def read_model_folder_weights(directory: str | Path):
    """The model weights of a model folder as `LoadedWeights`, hash-verified."""
    directory = Path(directory)
    meta = read_metadata(directory)
    path = verified_file(directory, meta, WEIGHTS_FILE)
    return LoadedWeights(
        read_safetensors(path), "samadapt", path, variant=meta["model"], image_size=int(meta["image_size"]),
        family=meta["family"],
    )
