"""A tiny but complete training run on the shared engine, started as a subprocess by the tests.

Synthetic regression data with a random augmentation and a dropout layer, so that resuming is
only exact when the data position and every random number generator are restored.

    python tiny_training.py RUN_DIR [--epochs 3] [--resume] [--kill-at-step K] [--sleep S]
    torchrun --nproc-per-node 2 tiny_training.py RUN_DIR --plain --batch-size 2

Prints `step N` after every optimiser step and writes RUN_DIR/final.safetensors (rank 0),
RUN_DIR/rank{R}.safetensors (every rank) and RUN_DIR/summary.json at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset

from samadapt.engine.callbacks import Callback
from samadapt.engine.distributed import seed_everything
from samadapt.engine.schedule import adamw_param_groups, cosine_with_warmup
from samadapt.engine.trainer import Checkpoints, Reporting, Schedule, TrainData, Trainer, Validation
from samadapt.errors import UserError


def save_weights(model: nn.Module, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))


class NoisyRegression(Dataset):
    def __init__(self, size: int, augment: bool):
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(size, 4, generator=generator)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        x = self.x[index]
        if self.augment:  # draws from the global torch RNG, which a checkpoint must restore
            x = x + 0.01 * torch.randn(4)
        return x, self.y[index]


def build_model(dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 1))


def step_fn(model, batch):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return loss, {"mae": (model(x) - y).abs().mean().item()}, x.shape[0]


class Reporter(Callback):
    def __init__(self, kill_at_step: int | None, sleep: float):
        self.kill_at_step, self.sleep = kill_at_step, sleep

    def on_step_end(self, trainer, step, metrics):
        print(f"step {step}", flush=True)
        if step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # no chance to clean up: like a power cut
        time.sleep(self.sleep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--plain", action="store_true", help="no dropout/augmentation (for DDP comparisons)")
    args = parser.parse_args(argv)

    seed_everything(0)
    model = build_model(0.0 if args.plain else 0.2)
    data = NoisyRegression(32, augment=not args.plain)
    val_x, val_y = data.x[:8], data.y[:8]
    optimizer = torch.optim.AdamW(adamw_param_groups(model, lr=args.lr, weight_decay=0.01))
    trainer = Trainer(
        model, step_fn, optimizer, TrainData(data, batch_size=args.batch_size), run_dir=args.run_dir,
        schedule=Schedule(lambda opt, total: cosine_with_warmup(opt, total, warmup_steps=2),
                          grad_clip=1.0, accumulate_steps=args.accumulate, deterministic=True),
        validation=Validation(lambda m: {"val_mse": nn.functional.mse_loss(m(val_x), val_y).item()},
                              monitor="val_mse"),
        checkpoints=Checkpoints(every_steps=args.checkpoint_every, keep_last=2, resume=args.resume,
                                meta={"lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs}),
        reporting=Reporting(progress=False, tensorboard=False, callbacks=[Reporter(args.kill_at_step, args.sleep)]),
    )
    try:
        summary = trainer.fit(args.epochs)
    except UserError as exc:
        print(f"samadapt: error: {exc}", file=sys.stderr)
        return 2
    save_weights(model, args.run_dir / f"rank{trainer.context.rank}.safetensors")
    if trainer.is_main:
        save_weights(model, args.run_dir / "final.safetensors")
        (args.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"status {summary['status']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
