"""An ONNX export folder (`samadapt export --format onnx`): what it holds and how it is checked.

Layout::

    encoder.onnx          pixel_values (B, 3, S, S) normalised -> embedding (B, 256, S/16, S/16)
                          [+ SAM2: high_res_s4 (B, 32, S/4, S/4), high_res_s8 (B, 64, S/8, S/8)]
    decoder.onnx          the encoder's outputs -> logits (B, C, S/4, S/4), one mask per class, the
                          run's class prompts baked in (kind "class-prompts"); or, for plain weights,
                          the outputs + boxes (B, 1, 4) -> logits (B, 1, S/4, S/4) (kind "box")
    samadapt-onnx.json    variant, family, image size, kind, classes, input normalisation, the
                          exporter, the parity measured at export, sha256 of each file

Each .onnx file also carries the variant and image size in its own metadata, so a file copied in
from another export is recognised as such, not just as a changed file.
"""

from __future__ import annotations

import json
from pathlib import Path

from samadapt.errors import UserError

FORMAT = "samadapt-onnx"
FORMAT_VERSION = 1
METADATA_FILE = "samadapt-onnx.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
KINDS = ("class-prompts", "box")


def is_onnx_folder(path: str | Path) -> bool:
    return (Path(path) / METADATA_FILE).is_file()


def read_onnx_folder(folder: str | Path) -> dict:
    """The checked metadata of an export folder: format, both files present, each file made by the
    same export (variant and image size in its own metadata) and unchanged (sha256)."""
    from samadapt.engine.atomic import sha256_file
    from samadapt.engine.run_folder import refuse_incomplete

    folder = Path(folder)
    refuse_incomplete(folder, "export folder")
    path = folder / METADATA_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"not an ONNX export folder ({METADATA_FILE} is missing; make one with `samadapt export`)",
                        folder) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read export metadata: {exc}", path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
        raise UserError(f"not a samadapt ONNX export (format is not {FORMAT!r})", path)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"export format version {meta['format_version']} is newer than this samadapt", path)
    for name in (ENCODER_FILE, DECODER_FILE):
        file = folder / name
        if not file.is_file():
            raise UserError("export file is missing", file)
        stamp = file_stamp(file)
        if (stamp.get("model"), stamp.get("image_size")) != (meta["model"], str(meta["image_size"])):
            raise UserError(f"{name} was exported from {stamp.get('model')} at {stamp.get('image_size')} px, but this "
                            f"folder is {meta['model']} at {meta['image_size']} px: export the model again "
                            "into one folder", file)
        if sha256_file(file) != meta["files"].get(name):
            raise UserError("sha256 mismatch with samadapt-onnx.json (the file was changed or partly written)", file)
    return meta


def file_stamp(path: Path) -> dict:
    """The samadapt entries of an .onnx file's metadata (model, image_size), without loading weights."""
    from samadapt.errors import require_module

    onnx = require_module("onnx", "onnx", "reading an ONNX export")

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a truncated or foreign file: onnx raises its own decode errors
        raise UserError(f"cannot read ONNX file: {type(exc).__name__}: {exc}", path) from None
    return {p.key.removeprefix("samadapt."): p.value for p in model.metadata_props if p.key.startswith("samadapt.")}


def stamp_file(path: Path, model: str, image_size: int, part: str) -> None:
    """Write variant, size and part into an .onnx file's own metadata."""
    import onnx

    graph = onnx.load(str(path))
    kept = [p for p in graph.metadata_props if not p.key.startswith("samadapt.")]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, value in (("model", model), ("image_size", str(image_size)), ("part", part)):
        entry = graph.metadata_props.add()
        entry.key, entry.value = f"samadapt.{key}", value
    onnx.save(graph, str(path))
