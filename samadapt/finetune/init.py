"""Where a fine-tuned Segment Anything model starts from: the `--init` option (grammar and parser
in `samadapt.modeling.sources`, shared by every command), read the fine-tuning way:

    random          random weights
    sam2:PATH       a released model: Meta's .pt/.pth, a Hugging Face folder or a samadapt checkpoint
    hf:ORG/NAME     the same from the Hugging Face Hub, through its cache (`modeling/hub.py`)
    mae:RUN_DIR     random weights, then the image-encoder trunk of an MAE pre-training run
    ckpt:DIR        a samadapt model checkpoint, or a fine-tuning run (its model and class prompts)

An MAE run's image encoder is read with `samadapt.pretrain.export.load_pretrained_encoder`
(RUN_DIR/encoder, a samadapt checkpoint) and loaded strictly; the variant must match `--model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from samadapt.errors import UserError
from samadapt.options import flag
from samadapt.modeling.sources import RELEASED_KINDS, parse_init, weights_path


@dataclass
class InitResult:
    """The built base model and what a run records about its origin."""

    base: object  # SegmentAnything
    provenance: dict
    class_prompts: dict[str, torch.Tensor] = field(default_factory=dict)  # class name -> (T, 256)


def load_mae_encoder(base, run_dir: Path) -> dict:
    """Load the image encoder of MAE run `run_dir` into `base` (a SAM2 `SegmentAnything`) strictly;
    returns the run's provenance."""
    from samadapt.pretrain.export import load_pretrained_encoder

    if base.family != "sam2":
        raise UserError(f"{flag('init')} mae: MAE pre-training is for SAM2's Hiera trunk, not {base.name}")
    state, provenance = load_pretrained_encoder(run_dir)
    if provenance.get("model") not in (None, base.name):
        raise UserError(f"pre-trained encoder is {provenance['model']} but {flag('model')} is {base.name}", run_dir)
    target = base.image_encoder.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape mismatch at {wrong[:3]}")
        raise UserError(f"pre-trained encoder does not fit {base.name}: {detail}", run_dir)
    base.image_encoder.load_state_dict(state, strict=True)
    return provenance


def build_base(model_name: str, image_size: int, init: str, class_names: list[str]) -> InitResult:
    """The SegmentAnything to fine-tune, initialised as `init` says (see module doc)."""
    from samadapt.modeling.loading import load_model
    from samadapt.modeling.registry import build_model, get_spec

    source = parse_init(init, command="finetune")
    kind, path = source.kind, source.path
    name = get_spec(model_name).name
    if kind == "random":
        return InitResult(build_model(name, image_size), {"init": "random"})
    if kind in RELEASED_KINDS:
        weights = weights_path(source)  # hf: resolved through the Hub's cache
        base = load_model(name, weights=weights, image_size=image_size)
        return InitResult(base, {"init": "pretrained", "parent": str(source) if source.hub else str(weights)})
    if kind == "mae":
        base = build_model(name, image_size)
        mae = load_mae_encoder(base, path)
        return InitResult(base, {"init": "mae", "parent": mae.get("checkpoint", str(path)), "pretraining": mae})
    return _from_checkpoint(name, image_size, path, class_names)


def _from_checkpoint(name: str, image_size: int, path: Path, class_names: list[str]) -> InitResult:
    from samadapt.finetune.runs import MODEL_DIR, load_finetune_run
    from samadapt.modeling.loading import load_model

    if (path / MODEL_DIR).is_dir():  # a fine-tuning run: its weights and its class prompts
        run = load_finetune_run(path, image_size=image_size)
        model = run.model
        if getattr(model, "kind", None) != "sam":
            raise UserError(f"run holds a {model.name} baseline, not a Segment Anything model", path)
        if model.base.name != name:
            raise UserError(f"run holds {model.base.name} but {flag('model')} is {name}", path)
        unknown = [c for c in class_names if c not in model.class_names]
        if unknown:
            raise UserError(f"dataset classes {unknown} are not in the checkpoint (it has {model.class_names})", path)
        prompts = {c: model.class_prompts[model.class_names.index(c)].detach().clone() for c in class_names}
        return InitResult(model.base, {"init": "checkpoint", "parent": str(path)}, prompts)
    base = load_model(name, weights=path, image_size=image_size)
    return InitResult(base, {"init": "checkpoint", "parent": str(path)})
