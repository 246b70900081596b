"""Hand a pre-trained encoder to fine-tuning (`--init mae:RUN_DIR`).

`RUN_DIR/encoder` is a samadapt checkpoint folder of the whole SAM2 model whose image encoder was
pre-trained; only the image encoder (Hiera trunk + FPN neck, transformers key names relative to
`Sam2Model.vision_encoder`) is meant to be taken from it. The Hiera weights do not depend on the
input size (the position embedding is interpolated), so they load at any fine-tuning size.

    state, provenance = load_pretrained_encoder("runs/mae1")
    model.image_encoder.load_state_dict(state)        # model: a SegmentAnything of the same variant

A run stopped before its planned end (Ctrl-C, a signal, a step budget) still exports its encoder,
so that it can be inspected or resumed; such an encoder is refused for initialisation unless
SAMADAPT_ALLOW_UNFINISHED=1 is set (or `allow_unfinished=True` passed).
"""

from __future__ import annotations

import os
from pathlib import Path

from samadapt.errors import UserError, warn

IMAGE_ENCODER_PREFIX = "vision_encoder."
ALLOW_UNFINISHED_ENV = "SAMADAPT_ALLOW_UNFINISHED"


def resolve_encoder_dir(run_dir: str | Path) -> Path:
    """RUN_DIR/encoder, or the folder itself when it already is the encoder checkpoint."""
    from samadapt.modeling.model_folder import METADATA_FILE

    run_dir = Path(run_dir)
    if (run_dir / METADATA_FILE).is_file():
        return run_dir
    encoder = run_dir / "encoder"
    if not (encoder / METADATA_FILE).is_file():
        if (run_dir / "checkpoints").is_dir():
            raise UserError("pre-training run has no encoder/ yet (still running, or stopped before the end: "
                            "resume it with `samadapt pretrain ... --resume`)", run_dir)
        raise UserError("not a pre-training run folder (no encoder/samadapt.json)", run_dir)
    return encoder


def load_pretrained_encoder(run_dir: str | Path, allow_unfinished: bool | None = None) -> tuple[dict, dict]:
    """(state dict for `SegmentAnything.image_encoder`, provenance) of a pre-training run.

    Provenance also carries "model" (the variant name) and "checkpoint" (the folder read), so the
    caller can check it builds the same variant. A run whose recorded status is not "completed" is
    refused unless `allow_unfinished` (default: the SAMADAPT_ALLOW_UNFINISHED environment variable).
    """
    from samadapt.modeling.model_folder import read_model_folder_weights, read_metadata

    encoder_dir = resolve_encoder_dir(run_dir)
    meta = read_metadata(encoder_dir)
    status = meta.get("provenance", {}).get("status")
    if status is not None and status != "completed":
        if allow_unfinished is None:
            allow_unfinished = os.environ.get(ALLOW_UNFINISHED_ENV, "") not in ("", "0")
        recorded = meta.get("provenance", {})
        done = (f"{recorded.get('epochs_completed', '?')} of {recorded.get('epochs_planned', '?')} epochs, "
                f"{recorded.get('steps', '?')} steps")
        if not allow_unfinished:
            raise UserError(f"pre-training did not complete (status {status}, {done}): resume it with "
                            f"`samadapt pretrain ... --resume`, or set {ALLOW_UNFINISHED_ENV}=1 to use this "
                            "encoder anyway", run_dir)
        warn(f"{run_dir}: using the encoder of an unfinished pre-training run (status {status}, {done})")
    weights = read_model_folder_weights(encoder_dir)  # sha256-verified
    state = {k[len(IMAGE_ENCODER_PREFIX):]: v for k, v in weights.state_dict.items() if k.startswith(IMAGE_ENCODER_PREFIX)}
    if not state:
        raise UserError("checkpoint holds no image-encoder weights", encoder_dir)
    provenance = {**meta.get("provenance", {}), "model": meta["model"], "checkpoint": str(encoder_dir)}
    return state, provenance
