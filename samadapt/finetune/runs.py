"""A fine-tuning run folder: its saved model, and how to load it and segment images with it.

Layout of RUN_DIR::

    config.json        the run's configuration (data, split/fold, model, init, loss, budget)
    model/             the best model by validation Dice:
                       Segment Anything: a samadapt model folder (model.safetensors, samadapt.json) with
                       the class prompts (C, T, 256) in extra.safetensors and the run facts under
                       `extra_config.finetune`;
                       baseline: baseline.safetensors + finetune.json
                       --train lora: the adapters merged into the weights, so it reads like any other
    adapter/           --train lora only: adapter.safetensors, the trainable tensors alone (LoRA A/B,
                       class prompts, decoder parts; peft's names) + adapter.json (settings, sizes)
    checkpoints/       training state (resume), best.pt
    train.csv, epoch.csv, tb/, curves.png, summary.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from samadapt.errors import UserError

MODEL_DIR = "model"
CONFIG_FILE = "config.json"
PROMPTS_KEY = "class_prompts"
BASELINE_WEIGHTS = "baseline.safetensors"
BASELINE_INFO = "finetune.json"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_INFO = "adapter.json"


@dataclass
class LoadedRun:
    """model: `ClassPromptSegmenter` or `ConvBaseline` (eval mode); info: the run facts saved with it."""

    model: torch.nn.Module
    info: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)


def save_run_model(model, run_dir: Path, info: dict, provenance: dict) -> Path:
    """Write `model` into RUN_DIR/model atomically; `info` (JSON) describes classes, loss, split..."""
    from samadapt.engine.atomic import staged_dir

    folder = Path(run_dir) / MODEL_DIR
    info = {**info, "kind": model.kind, "class_names": list(model.class_names), "image_size": model.image_size}
    if model.kind == "sam":
        from samadapt.modeling.model_folder import save_model_folder

        from samadapt.modeling.lora import has_lora, merged_copy

        info["tokens_per_class"] = int(model.class_prompts.shape[1])
        info["presence"] = bool(model.presence)
        base = model.base
        if has_lora(base.hf):
            save_adapter(model, run_dir, info)
            base = merged_copy(base)
        return save_model_folder(base, folder, provenance, extra_tensors={PROMPTS_KEY: model.class_prompts},
                                 extra_config={"finetune": info})
    from safetensors.torch import save_file

    info["model"] = model.name
    with staged_dir(folder) as stage:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(tensors, str(stage / BASELINE_WEIGHTS))
        (stage / BASELINE_INFO).write_text(json.dumps({**info, "provenance": provenance}, indent=2) + "\n")
    return folder


def save_adapter(model, run_dir: Path, info: dict) -> Path:
    """RUN_DIR/adapter: the trainable tensors of a LoRA run alone (what differs from its --init)."""
    from safetensors.torch import save_file

    from samadapt.engine.atomic import sha256_file, staged_dir
    from samadapt.modeling.lora import trainable_state

    tensors = trainable_state(model)
    with staged_dir(Path(run_dir) / ADAPTER_DIR) as stage:
        save_file(tensors, str(stage / ADAPTER_WEIGHTS))
        record = {"lora": info.get("lora"), "class_names": list(model.class_names), "tensors": len(tensors),
                  "parameters": sum(t.numel() for t in tensors.values()),
                  "bytes": (stage / ADAPTER_WEIGHTS).stat().st_size, "sha256": sha256_file(stage / ADAPTER_WEIGHTS)}
        (stage / ADAPTER_INFO).write_text(json.dumps(record, indent=2) + "\n")
    return Path(run_dir) / ADAPTER_DIR


def is_run_dir(path: str | Path) -> bool:
    folder = Path(path) / MODEL_DIR
    return (folder / "samadapt.json").is_file() or (folder / BASELINE_INFO).is_file()


def refuse_fewshot_run(run_dir: str | Path) -> None:
    """A few-shot run also has a model/ checkpoint, but its prompts are prototypes: say which command reads it."""
    from samadapt.modeling.model_folder import read_metadata

    folder = Path(run_dir) / MODEL_DIR if (Path(run_dir) / MODEL_DIR).is_dir() else Path(run_dir)
    if (folder / "samadapt.json").is_file() and "fewshot" in read_metadata(folder).get("extra_config", {}):
        raise UserError("this is a few-shot run: use `samadapt fewshot predict --model RUN` "
                        "(or `samadapt fewshot evaluate --model RUN`)", run_dir)


def load_finetune_run(run_dir: str | Path, image_size: int | None = None) -> LoadedRun:
    """The fine-tuned model of a run folder (or of its `model/` folder), in eval mode."""
    from samadapt.modeling.class_prompts import ClassPromptSegmenter

    run_dir = Path(run_dir)
    folder = run_dir / MODEL_DIR if (run_dir / MODEL_DIR).is_dir() else run_dir
    if (folder / BASELINE_INFO).is_file():
        return _load_baseline(folder)
    if not (folder / "samadapt.json").is_file():
        raise UserError("not a fine-tuning run: no model/ folder with a saved model (did training finish?)", run_dir)
    from samadapt.modeling.loading import load_model_folder

    refuse_fewshot_run(run_dir)

    saved = load_model_folder(folder, image_size=image_size)
    info = saved.extra_config.get("finetune")
    prompts = saved.extra_tensors.get(PROMPTS_KEY)
    if info is None or prompts is None:
        raise UserError("checkpoint has no class prompts: it is a plain model, not a fine-tuning run", folder)
    model = ClassPromptSegmenter(saved.model, info["class_names"], tokens_per_class=prompts.shape[1],
                                 presence=bool(info.get("presence", False)))
    with torch.no_grad():
        model.class_prompts.copy_(prompts)
    return LoadedRun(model.eval(), {**info, "provenance": saved.provenance})


def _load_baseline(folder: Path) -> LoadedRun:
    from safetensors.torch import load_file

    from samadapt.modeling.unet_baselines import ConvBaseline

    try:
        info = json.loads((folder / BASELINE_INFO).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read run facts: {exc}", folder / BASELINE_INFO) from None
    model = ConvBaseline(info["model"], info["class_names"], int(info["image_size"]))
    try:
        model.load_state_dict(load_file(str(folder / BASELINE_WEIGHTS)), strict=True)
    except Exception as exc:
        raise UserError(f"cannot load baseline weights: {type(exc).__name__}: {exc}", folder / BASELINE_WEIGHTS) from None
    return LoadedRun(model.eval(), info)


def full_size_logits(model, pixel_values: torch.Tensor, return_presence: bool = False, **prompts):
    """Model logits upsampled to the input square: (B, 3, S, S) -> (B, C, S, S).

    return_presence: (logits, presence logits (B, C)) from a class-prompt model with the presence
    gate, for training (the mask logits are then ungated)."""
    if return_presence:
        logits, presence = model(pixel_values, return_presence=True, **prompts)
    else:
        logits, presence = model(pixel_values, **prompts), None
    if logits.shape[-1] != pixel_values.shape[-1]:
        logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    return (logits, presence) if return_presence else logits


@torch.inference_mode()
def segment_index(model, image: np.ndarray) -> np.ndarray:
    """Index mask (H, W) uint8 (0 background, k = class k) of one 2D image on its own pixel grid."""
    from samadapt.data.preprocess import prepare_image, restore_logits
    from samadapt.modeling.class_prompts import logits_to_index

    pixels, box = prepare_image(image, model.image_size)
    logits = model(pixels[None])[0]  # (C, h, w)
    full = restore_logits(logits, box)  # (C, H, W)
    return logits_to_index(full[None])[0].to(torch.uint8).numpy()
