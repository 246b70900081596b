"""MAE pre-training of a SAM2 image encoder on unlabeled images, on the shared `Trainer`.

Run folder (`--out RUN_DIR`):
    checkpoints/     resumable training state (trunk + MAE decoder + optimiser), see samadapt.engine
    metrics.csv, tensorboard/   per-step loss and lr (written by the engine's MetricLogger)
    recon/epoch-XXXX.png        original / masked input / reconstruction of a few fixed images
    summary.json     how training ended (status, steps, final loss, the encoder's folder)
    encoder/         the result: the whole SAM2 model in samadapt's checkpoint format, its image
                     encoder pre-trained (the neck, prompt encoder and mask decoder stay as
                     initialised); provenance says how it was made. See `load_pretrained_encoder`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from samadapt.engine.curves import CurvePlot
from samadapt.errors import UserError
from samadapt.options import flag
from samadapt.modeling.masking import MASK_UNIT_PIXELS, unit_grid
from samadapt.pretrain.config import DEFAULT_WARMUP_EPOCHS, PretrainConfig  # noqa: F401 (re-exported)

ENCODER_DIR = "encoder"
RECON_DIR = "recon"
SUMMARY_FILE = "summary.json"
CALIBRATION_IMAGES = 32


def _check_image_files(dataset) -> None:
    """Decode every file once before any model work, so a broken, 4D or NaN-holding file fails
    the command up front, and refuse 2-D images smaller than one mask unit (letterboxing would
    only blow up a few pixels)."""
    from samadapt.data.io import is_volume_file, read_image
    from samadapt.data.volumes import read_volume

    for path in dict.fromkeys(path for path, _, _ in dataset.items):
        if is_volume_file(path):
            read_volume(path)
            continue
        height, width = read_image(path).shape[:2]
        if min(width, height) < MASK_UNIT_PIXELS:
            raise UserError(
                f"image is {width}x{height} pixels, smaller than one {MASK_UNIT_PIXELS}-pixel mask unit", path
            )


def build_dataset(config: PretrainConfig):
    from samadapt.data.dataset import find_description, load_dataset
    from samadapt.data.torch_datasets import UnlabeledImageDataset

    sources = []
    for item in config.data:
        path = Path(item)
        if not path.exists():
            raise UserError(f"{flag('data')} path does not exist", path)
        # A dataset description (YAML/JSON, or a folder holding one) is read as a dataset; other
        # folders are searched for images recursively.
        described = path.suffix.lower() in (".yaml", ".yml", ".json") if path.is_file() else find_description(path)
        sources.append(load_dataset(path) if described else path)
    dataset = UnlabeledImageDataset(sources, config.image_size)
    _check_image_files(dataset)
    if len(dataset) < config.batch_size:
        raise UserError(f"{flag('batch_size')} {config.batch_size} is larger than the {len(dataset)} images found in "
                        f"{', '.join(config.data)}")
    return dataset


def build_mae(config: PretrainConfig):
    """The `SegmentAnything` model (random or from SAM2 weights) and the MAE around its trunk."""
    from samadapt.modeling.loading import load_model
    from samadapt.modeling.registry import get_spec
    from samadapt.modeling.sources import parse_init, weights_path
    from samadapt.modeling.mae import MaskedAutoencoder

    spec = get_spec(config.model)
    if spec.family != "sam2":
        raise UserError(f"MAE pre-training supports SAM2 Hiera models; {config.model} is a {spec.family} model")
    weights = weights_path(parse_init(config.init, command="pretrain"))
    model = load_model(spec.name, weights, config.image_size)
    mae = MaskedAutoencoder(model.trunk, patch_size=config.patch_size, decoder_dim=config.decoder_dim,
                            decoder_depth=config.decoder_depth, norm_pix=config.norm_pix,
                            dense_mask_token=config.path == "dense")
    return model, mae


def make_optimizer(module, lr: float, weight_decay: float):
    """AdamW (betas 0.9/0.95 as in MAE), no decay on biases, norms and embeddings."""
    from samadapt.engine.schedule import adamw, adamw_param_groups

    return adamw(adamw_param_groups(module, lr, weight_decay), betas=(0.9, 0.95))


def run_pretrain(config: PretrainConfig, resume: bool = False, progress: bool = True, max_steps: int | None = None) -> dict:
    """Train, then save the encoder to RUN_DIR/encoder. Returns the trainer's summary plus `encoder`."""
    from samadapt.engine.atomic import check_output_dir
    from samadapt.engine.distributed import seed_everything
    from samadapt.engine.provenance import check_resume_images, image_list_hash, record_inputs
    from samadapt.engine.schedule import cosine_with_warmup
    from samadapt.engine.trainer import Checkpoints, Reporting, Schedule, TrainData, Trainer
    from samadapt.modeling.masking import random_unit_mask
    from samadapt.pretrain.recon import ReconstructionPictures

    config.validate()
    run_dir = check_output_dir(config.out)
    if resume and not (run_dir / "checkpoints").is_dir():
        raise UserError("cannot resume: no checkpoints in this run folder", run_dir)
    dataset = build_dataset(config)
    images = image_list_hash(path for path, _, _ in dataset.items)
    if resume:  # the same images as the run started with, before any model work
        check_resume_images(run_dir, images, flag("data"))
    seed_everything(config.seed)  # random-init weights follow --seed (and match on every rank)
    model, mae = build_mae(config)
    grid = unit_grid(config.image_size)

    def step_fn(net, batch):
        pixels = batch["image"]
        # Masks come from the global RNG, which the trainer seeds and stores in checkpoints, so a
        # resumed run draws the same masks as an uninterrupted one.
        mask = random_unit_mask(pixels.shape[0], grid, config.mask_ratio).to(pixels.device)
        out = net(pixels, mask, config.path)
        return out.loss, {}, pixels.shape[0]

    optimizer = make_optimizer(mae, config.lr, config.weight_decay)
    # drop_last; refined by the trainer under DDP; a short last accumulation group is still a step
    steps_per_epoch = -(-(len(dataset) // config.batch_size) // config.grad_accumulation)

    def scheduler(opt, total_steps):
        warmup = min(total_steps, round(config.warmup() * max(1, total_steps // config.epochs)))
        return cosine_with_warmup(opt, total_steps, warmup_steps=warmup)

    pictures = ReconstructionPictures(dataset, grid, config.path, run_dir / RECON_DIR, config.recon_every,
                                      seed=config.seed, mask_ratio=config.mask_ratio)
    trainer = Trainer(
        mae, step_fn, optimizer, TrainData(dataset, batch_size=config.batch_size, num_workers=config.num_workers),
        run_dir=run_dir, schedule=Schedule(scheduler, grad_clip=config.grad_clip, accumulate_steps=config.grad_accumulation,
                                           seed=config.seed),
        checkpoints=Checkpoints(every_steps=config.checkpoint_every or None, resume=resume, meta=config.resume_key(),
                                may_differ=("epochs",)),
        reporting=Reporting(progress=progress, callbacks=[pictures, CurvePlot(("train_loss",))]),
    )
    if trainer.is_main and not resume:
        record_inputs(run_dir, images)
    summary = trainer.fit(config.epochs, max_steps=max_steps)
    summary["encoder"] = str(run_dir / ENCODER_DIR)
    if trainer.is_main:
        _save_encoder(config, summary, model, dataset, steps_per_epoch, progress)
    return summary


def _save_encoder(config: PretrainConfig, summary: dict, model, dataset, steps_per_epoch: int, progress: bool) -> None:
    """RUN_DIR/encoder (the SAM2 model with the pre-trained trunk, and how it was made) and summary.json."""
    from samadapt.engine.atomic import atomic_write_text
    from samadapt.engine.logging import note
    from samadapt.modeling.model_folder import save_model_folder
    from samadapt.pretrain.calibrate import calibrate_neck

    run_dir = Path(config.out)
    provenance = {
        "stage": "mae-pretrain", "command": config.command, "data": [str(Path(d).resolve()) for d in config.data],
        "images": len(dataset), "init": config.init, "epochs_completed": summary["epochs_completed"],
        "epochs_planned": config.epochs, "steps": summary["global_step"], "mask_ratio": config.mask_ratio,
        "image_size": config.image_size, "path": config.path, "batch_size": config.batch_size,
        "lr": config.lr, "seed": config.seed, "patch_size": config.patch_size, "norm_pix": config.norm_pix,
        "final_train_loss": summary["last_train"].get("loss"), "status": summary["status"],
        "steps_per_epoch": steps_per_epoch,
    }
    if config.init == "random":  # the neck never trained: give it data-dependent scales (calibrate.py)
        if progress:
            note(f"calibrating the neck on {min(CALIBRATION_IMAGES, len(dataset))} images")
        provenance["neck_calibration"] = calibrate_neck(model, _calibration_batches(dataset, model))
    if progress:  # exporting a large model takes a while: say what the pause is
        note(f"saving the encoder to {summary['encoder']}")
    save_model_folder(model, run_dir / ENCODER_DIR, provenance, extra_config={"mae": asdict(config)})
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")


def _calibration_batches(dataset, model, images: int = CALIBRATION_IMAGES, batch: int = 8) -> list:
    """The first `images` pre-training images (fixed, unaugmented order), as pixel batches on the
    model's device."""
    import torch

    device = next(model.parameters()).device
    count = min(images, len(dataset))
    pixels = [dataset[i]["image"] for i in range(count)]
    return [torch.stack(pixels[i:i + batch]).to(device) for i in range(0, count, batch)]
