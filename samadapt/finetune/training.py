"""Fine-tune a segmentation model on a dataset split with the shared training engine.

`finetune(FinetuneConfig(...))` checks every input first (dataset labelled, split and fold, loss,
model, init), builds the model (`ClassPromptSegmenter` or a MONAI baseline), trains it with
`samadapt.engine.trainer.Trainer` (augmentation, cosine schedule, validation Dice every epoch, best
checkpoint, early stopping, exact resume), then saves the best model into RUN_DIR/model together
with the class names, prompts, loss, split/fold and provenance, plus curves (CSV, TensorBoard, PNG).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from samadapt.engine.curves import CurvePlot
from samadapt.engine.provenance import input_hashes
from samadapt.errors import UserError, warn
from samadapt.options import flag
from samadapt.finetune.config import FinetuneConfig  # noqa: F401 (re-exported)

VAL_METRIC = "val_dice"


class EpochAugmentation:
    """Re-seeds the dataset's augmentation by the trainer's current epoch (different each epoch,
    still reproducible and exact on resume)."""

    def __init__(self, augment):
        self.augment = augment
        self.epoch_source = lambda: 0

    def __call__(self, sample: dict, index: int = 0) -> dict:
        self.augment.set_epoch(self.epoch_source())
        return self.augment(sample, index)


def prepare_data(config: FinetuneConfig):
    """(dataset, splits, train cases, val cases) with every user mistake reported as a UserError."""
    from samadapt.data.dataset import load_dataset
    from samadapt.data.splits import load_splits, split_cases

    dataset = load_dataset(config.data)
    if not dataset.spec.labeled or not dataset.labeled_cases():
        raise UserError("dataset has no masks: fine-tuning needs labelled images", config.data)
    splits = load_splits(config.splits, dataset)
    n_folds = len(splits["splits"])
    if not 0 <= config.fold < n_folds:
        raise UserError(f"{flag('fold')} {config.fold} is outside the split, which has folds 0..{n_folds - 1}", config.splits)
    train_cases = [c for c in split_cases(dataset, splits, "train", config.fold) if c.labeled]
    val_cases = [c for c in split_cases(dataset, splits, "val", config.fold) if c.labeled]
    if not train_cases or not val_cases:
        raise UserError(f"fold {config.fold} has {len(train_cases)} labelled training and {len(val_cases)} "
                        "labelled validation cases; both must be non-empty", config.splits)
    return dataset, splits, train_cases, val_cases


def build_finetune_model(config: FinetuneConfig, class_names: list[str]):
    """The model to train and the provenance of its starting weights."""
    from samadapt.modeling.unet_baselines import BASELINES, ConvBaseline

    if config.model in BASELINES:
        if config.init != "random":
            raise UserError(f"{flag('init')} {config.init}: the {config.model} baseline starts from random weights")
        if config.prompt != "none":
            raise UserError(f"{flag('prompt')} {config.prompt}: the {config.model} baseline takes no prompts")
        if config.presence:
            raise UserError(f"{flag('presence')}: the {config.model} baseline has no presence head")
        if config.train == "lora":
            raise UserError(f"{flag('train')} lora: the {config.model} baseline has no adapters; use {flag('train')} all")
        return ConvBaseline(config.model, class_names, config.image_size), {"init": "random"}
    from samadapt.finetune.init import build_base
    from samadapt.modeling.class_prompts import ClassPromptSegmenter

    start = build_base(config.model, config.image_size, config.init, class_names)
    model = ClassPromptSegmenter(start.base, class_names, tokens_per_class=config.tokens_per_class,
                                 presence=config.presence)
    if start.class_prompts:
        prompts = torch.stack([start.class_prompts[c] for c in class_names])
        if prompts.shape != model.class_prompts.shape:
            raise UserError(f"{flag('tokens_per_class')} {config.tokens_per_class} differs from the checkpoint's "
                            f"{prompts.shape[1]}")
        with torch.no_grad():
            model.class_prompts.copy_(prompts)
    if config.train == "lora":
        from samadapt.modeling.lora import add_lora

        add_lora(model.base, config.lora_settings())
    return model, start.provenance


def validation_dice(model, loader, num_classes: int, prompt_mode: str) -> dict[str, float]:
    """Mean Dice over validation images and classes (per-class means too), padding excluded."""
    from samadapt.evaluate.metrics import overlap_scores
    from samadapt.modeling.class_prompts import one_hot_targets
    from samadapt.finetune.prompts import simulate_prompts
    from samadapt.finetune.runs import full_size_logits

    device = next(model.parameters()).device
    scores = []
    for batch in loader:
        image, mask, valid = batch["image"].to(device), batch["mask"].to(device), batch["valid"].to(device)
        logits = full_size_logits(model, image, **simulate_prompts(mask, num_classes, prompt_mode))
        pred = (logits > 0) & valid.unsqueeze(1)
        scores.append(overlap_scores(pred, one_hot_targets(mask, num_classes))["dice"])
    dice = torch.cat(scores).float()  # (N, C)
    out = {VAL_METRIC: float(dice.mean())}
    if num_classes > 1:
        out.update({f"val_dice_{c + 1}": float(dice[:, c].mean()) for c in range(num_classes)})
    return out


def finetune(config: FinetuneConfig) -> dict:
    """Train as `config` says; returns the summary also written to RUN_DIR/summary.json."""
    from samadapt.data.check import require_readable
    from samadapt.engine.distributed import seed_everything
    from samadapt.engine.provenance import check_resume_inputs, record_inputs
    from samadapt.engine.schedule import adamw
    from samadapt.finetune.losses import parse_loss
    from samadapt.finetune.runs import save_run_model

    recipe, out = _check_settings(config)
    if config.resume:  # the same splits and description as the run started with, before any work
        check_resume_inputs(out, splits=config.splits, data=config.data)
    loss_fn = parse_loss(config.loss)
    dataset, splits, train_cases, val_cases = prepare_data(config)
    require_readable(train_cases + val_cases)  # a broken image or foreign label fails before any model work
    classes = dataset.class_names
    # --seed fixes the random weights (encoder, decoder, class prompts) too, not only the data order;
    # the same on every rank under DDP
    seed_everything(config.seed)
    model, provenance = build_finetune_model(config, classes)
    counts = model.configure_trainable(config.train, config.freeze_stages)
    groups = model.param_groups(recipe.lr, recipe.encoder_lr, config.weight_decay, recipe.layer_decay)
    optimizer = adamw(groups, lr=config.lr)
    augment, train_data, val_loader = _build_datasets(config, train_cases, val_cases, classes)
    step_fn = segmentation_step_fn(loss_fn, len(classes), config.prompt, config.presence)
    validate_fn = lambda net: validation_dice(net, val_loader, len(classes), config.prompt)  # noqa: E731
    trainer = _build_trainer(config, model, step_fn, validate_fn, optimizer, train_data, recipe, out)
    if augment is not None:
        augment.epoch_source = lambda: trainer.epoch
    if trainer.is_main:  # under torchrun only rank 0 writes the run folder
        _write_run_config(out, config, classes, recipe, train_cases, val_cases)
        if not config.resume:
            record_inputs(out, input_hashes(splits=config.splits, data=config.data))
    started = time.perf_counter()
    summary = trainer.fit(config.epochs)
    seconds = time.perf_counter() - started

    _keep_selected_weights(config, model, out)
    result = {**summary, "classes": classes, "parameters": counts, "recipe": recipe.as_dict(), "seconds_this_session": seconds,
              "seconds_per_epoch": seconds / max(1, summary["epochs_completed"] - _resumed_epochs(summary)),
              "model_dir": str(out / "model")}
    result["warnings"] = learning_warnings(summary)
    if trainer.is_main:
        for line in result["warnings"]:
            warn(line)
        save_run_model(model.eval(), out, _run_info(config, dataset, loss_fn.spec, recipe, summary),
                       {**provenance, "command": "finetune", "data": str(config.data),
                        "splits": str(config.splits), "fold": config.fold})
        if config.train == "lora":
            from samadapt.finetune.runs import ADAPTER_DIR, ADAPTER_INFO

            result["adapter"] = json.loads((out / ADAPTER_DIR / ADAPTER_INFO).read_text())
        (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _check_settings(config: FinetuneConfig):
    """(resolved recipe, run folder), after every check that needs no data or model, so that a bad
    value, an impossible precision or a used run folder fails before any work."""
    from samadapt.engine.atomic import check_output_dir
    from samadapt.engine.callbacks import resolve_precision
    from samadapt.finetune.recipe import resolve_recipe
    from samadapt.modeling.sources import parse_init

    config.validate()
    recipe = resolve_recipe(config.recipe, parse_init(config.init).kind, config.lr, config.encoder_lr,
                            config.layer_decay, config.warmup_fraction, adapters=config.train == "lora")
    # the device the trainer will pick, so an impossible precision fails before any work
    resolve_precision(config.precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    out = check_output_dir(config.out)
    if not config.resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise UserError(f"run folder already holds checkpoints: add {flag('resume')} or choose a new {flag('out')}", out)
    return recipe, out


def _build_datasets(config: FinetuneConfig, train_cases, val_cases, classes: list[str]):
    """(epoch-seeded augmentation or None, training data set, validation loader)."""
    from samadapt.data.augment import build_augmentation
    from samadapt.data.torch_datasets import SegmentationDataset

    augment = EpochAugmentation(build_augmentation(config.seed, class_names=classes)) if config.augment else None
    train_data = SegmentationDataset(train_cases * config.repeat, config.image_size, classes, augment=augment)
    val_data = SegmentationDataset(val_cases, config.image_size, classes)
    val_loader = torch.utils.data.DataLoader(val_data, batch_size=config.batch_size, shuffle=False)
    return augment, train_data, val_loader


def segmentation_step_fn(loss_fn, n_classes: int, prompt_mode: str, presence: bool):
    """The trainer's step: the loss of one batch (plus the presence gate's, when it trains)."""
    from samadapt.finetune.prompts import simulate_prompts
    from samadapt.finetune.runs import full_size_logits
    from samadapt.modeling.class_prompts import one_hot_targets, presence_targets

    def step_fn(net, batch):
        prompts = simulate_prompts(batch["mask"], n_classes, prompt_mode)
        target = one_hot_targets(batch["mask"], n_classes)
        # Losses in fp32 whatever the autocast precision: sigmoids and Dice sums lose too much in bf16.
        if not presence:
            logits = full_size_logits(net, batch["image"], **prompts).float()
            return loss_fn(logits, target, batch["valid"]), {}, batch["image"].shape[0]
        logits, present_logits = full_size_logits(net, batch["image"], return_presence=True, **prompts)
        logits, present_logits = logits.float(), present_logits.float()
        segmentation = loss_fn(logits, target, batch["valid"])
        present = presence_targets(target, batch["valid"])
        gate = torch.nn.functional.binary_cross_entropy_with_logits(present_logits, present)
        return segmentation + gate, {"presence_loss": float(gate.detach())}, batch["image"].shape[0]

    return step_fn


def _build_trainer(config: FinetuneConfig, model, step_fn, validate_fn, optimizer, train_data, recipe, out: Path):
    """The shared trainer: cosine schedule with the recipe's warm-up, validation Dice every epoch
    (best kept, early stopping with `patience`), curves."""
    from samadapt.engine.schedule import cosine_with_warmup
    from samadapt.engine.trainer import Checkpoints, Reporting, Schedule, TrainData, Trainer, Validation

    warmup = lambda total: int(round(recipe.warmup_fraction * total))  # noqa: E731
    return Trainer(
        model, step_fn, optimizer, TrainData(train_data, batch_size=config.batch_size, num_workers=config.num_workers,
                                             drop_last=len(train_data) >= config.batch_size), run_dir=out,
        schedule=Schedule(lambda opt, total: cosine_with_warmup(opt, total, warmup_steps=warmup(total)),
                          grad_clip=config.grad_clip, accumulate_steps=config.grad_accumulation,
                          precision=config.precision, seed=config.seed),
        validation=Validation(validate_fn, monitor=VAL_METRIC, mode="max", patience=config.patience),
        checkpoints=Checkpoints(resume=config.resume, meta=config.run_settings(), trainable_only=config.train == "lora"),
        reporting=Reporting(progress=config.progress, callbacks=[CurvePlot(("train_loss", VAL_METRIC))]),
        # Under DDP: parts of SAM's decoder (e.g. the IoU head) get no gradient from the segmentation loss.
        ddp_kwargs={"find_unused_parameters": True},
    )


def _write_run_config(out: Path, config: FinetuneConfig, classes, recipe, train_cases, val_cases) -> None:
    from samadapt.finetune.runs import CONFIG_FILE

    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps({**config.run_settings(), "classes": classes,
                                               "resolved_recipe": recipe.as_dict(),
                                               "train_cases": [c.id for c in train_cases],
                                               "val_cases": [c.id for c in val_cases]}, indent=2) + "\n")


def _keep_selected_weights(config: FinetuneConfig, model, out: Path) -> None:
    """With `keep best`, load the weights of the epoch with the best validation Dice; with `last`,
    the model stays as training left it."""
    from samadapt.engine import checkpoint as engine_ckpt
    from samadapt.engine.trainer_state import load_model_state

    best = out / "checkpoints" / "best.pt"
    if config.keep == "best" and best.is_file():  # the best by validation Dice, not the last
        state, _ = engine_ckpt.load_training_state(best)
        load_model_state(model, state["model"], trainable_only=config.train == "lora")


def _run_info(config: FinetuneConfig, dataset, loss_spec: str, recipe, summary: dict) -> dict:
    """What the saved model folder records about how it was trained."""
    return {"loss": loss_spec, "splits": str(Path(config.splits).resolve()), "fold": config.fold,
            "data": str(Path(config.data).resolve()), "intensity": dataset.spec.intensity,
            "dataset": dataset.name, "train": config.train, "prompt": config.prompt,
            "best": summary["best"], "kept": config.keep, "epochs_completed": summary["epochs_completed"],
            "recipe": recipe.as_dict(), **input_hashes(splits=config.splits, data=config.data),
            **({"lora": config.lora_settings().as_dict()} if config.train == "lora" else {})}


def learning_warnings(summary: dict) -> list[str]:
    """What the summary line alone would hide: a best validation Dice of 0 reads like a number, but
    means no validation image ever overlapped its masks."""
    best = (summary.get("best") or {}).get("value")
    if best is not None and best <= 0:
        return ["nothing learned: the best validation Dice is 0 (no predicted pixel overlapped a mask in any "
                "validation); check the labels, the learning rate and the number of epochs before using this model"]
    return []


def _resumed_epochs(summary: dict) -> int:
    resumed = summary.get("resumed_from")
    if not resumed:
        return 0
    record = Path(resumed).with_suffix(".json")
    try:
        return int(json.loads(record.read_text()).get("epoch") or 0)
    except (OSError, ValueError):
        return 0
