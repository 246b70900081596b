"""Multi-process training set-up, seeding and a data sampler that can resume mid-epoch.

Processes are started by `torchrun` (or SLURM's `srun torchrun ...`), which sets `RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`. `init_distributed()` reads them and
joins the process group (NCCL on CUDA, gloo on CPU); without them everything here degrades to a
single process, so the same code runs on a laptop and on a cluster. `launch_torchrun` re-runs a
command under torchrun for the `--devices N` convenience flag.

Nothing happens on import: the process group is created only by `init_distributed()`.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from samadapt.errors import UserError


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> DistributedContext:
    """Join the process group described by torchrun's environment; idempotent.

    `device` overrides the automatic choice (cuda:LOCAL_RANK when CUDA is available, else cpu).
    """
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device is None:
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if name not in os.environ:
                raise UserError(f"WORLD_SIZE={world} but {name} is not set: start the command with torchrun")
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank(), local_rank=local_rank, world_size=world_size(), device=device)


def shutdown_distributed() -> None:
    """Leave the process group (the CLI does so when a command ends); a no-op without one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """True on the process that writes logs and checkpoints (global rank 0)."""
    return rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor | float:
    """Average over ranks; returns the same kind it was given (a float stays a float)."""
    if not _active():
        return value
    as_float = not isinstance(value, torch.Tensor)
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.as_tensor(value, dtype=torch.float64 if as_float else None).detach().clone()
    original_device = tensor.device
    tensor = tensor.to(backend_device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= dist.get_world_size()
    return float(tensor) if as_float else tensor.to(original_device)


def gather_objects(obj: object) -> list:
    """Every rank's `obj`, in rank order (small objects only: it pickles them)."""
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, device: torch.device | None = None, **ddp_kwargs) -> nn.Module:
    """`DistributedDataParallel(model)` when running with several processes, else `model` itself."""
    if not _active() or dist.get_world_size() == 1:
        return model
    device_ids = [device.index] if device is not None and device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def seed_everything(seed: int, per_rank: bool = False) -> int:
    """Seed python, numpy and torch (all CUDA devices). Returns the seed actually used.

    Use `per_rank=False` before building the model (identical initial weights everywhere) and
    `per_rank=True` afterwards, so random augmentations differ between ranks instead of every rank
    drawing the same crops.
    """
    effective = int(seed) + (rank() if per_rank else 0)
    random.seed(effective)
    np.random.seed(effective % 2**32)
    torch.manual_seed(effective)
    return effective


def deterministic(enabled: bool = True) -> None:
    """Make repeated runs bit-identical (same hardware, same world size), at some speed cost."""
    if enabled:
        # cuBLAS needs a fixed workspace to be deterministic; must be set before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def torchrun_command(argv: Sequence[str], nproc: int, module: str = "samadapt",
                     launcher: str = "torch.distributed.run") -> list[str]:
    """The command line that runs `python -m <module> <argv>` on `nproc` local processes.

    `launcher` is torchrun's module, or `samadapt.engine.launch` (torchrun without its own
    traceback and failure report, exiting with 2 when a worker reported bad input)."""
    if nproc < 1:
        raise UserError(f"--devices must be >= 1, got {nproc}")
    return [
        sys.executable,
        "-m",
        launcher,
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *argv,
    ]


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_torchrun(argv: Sequence[str], nproc: int, module: str = "samadapt") -> int:
    """Re-run this command under torchrun with `nproc` processes and return its exit code.

    `argv` must no longer contain the `--devices` flag itself (otherwise each child would relaunch).
    """
    if launched_by_torchrun():
        raise UserError("--devices cannot be used inside torchrun; use torchrun's --nproc-per-node instead")
    if any(arg == "--devices" or arg.startswith("--devices=") for arg in argv):
        raise UserError("launch_torchrun: remove --devices from the relaunched arguments")
    return subprocess.call(torchrun_command(argv, nproc, module, launcher="samadapt.engine.launch"))


class ResumableDistributedSampler(DistributedSampler):
    """`DistributedSampler` that can start an epoch part-way through.

    The position is kept as the number of samples consumed by *all* ranks together, so a run can
    resume exactly where it stopped (same world size: identical remaining order) and even resume
    on a different number of processes (the remaining samples are re-split among the new ranks).
    Call `set_epoch(e)` at the start of each epoch and `advance(n)` after each consumed batch of
    `n` samples per rank; `state_dict()` / `load_state_dict()` go into the checkpoint.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank_: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        super().__init__(
            dataset,
            num_replicas=world_size() if num_replicas is None else num_replicas,
            rank=rank() if rank_ is None else rank_,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.consumed_global = 0  # samples of this epoch consumed by all ranks together

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.consumed_global = 0
        super().set_epoch(epoch)

    def advance(self, samples_per_rank: int) -> None:
        self.consumed_global += samples_per_rank * self.num_replicas

    def _epoch_order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            return torch.randperm(len(self.dataset), generator=generator).tolist()
        return list(range(len(self.dataset)))

    def _remaining(self) -> list[int]:
        order = self._epoch_order()
        if self.drop_last:
            order = order[: self.total_size]
        else:  # pad by repeating from the start so every rank gets the same count (as torch does)
            padding = self.total_size - len(order)
            order += (order * (padding // max(1, len(order)) + 1))[:padding]
        remaining = order[self.consumed_global:]
        # Equal counts per rank, or DDP would wait forever on a rank that ran out of batches. Only
        # after resuming on another world size can the remainder be uneven: pad or drop as torch does.
        extra = len(remaining) % self.num_replicas
        if extra and self.drop_last:
            remaining = remaining[: len(remaining) - extra]
        elif extra:
            remaining += remaining[: self.num_replicas - extra]
        return remaining

    def __iter__(self) -> Iterator[int]:
        return iter(self._remaining()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        left = max(0, self.total_size - self.consumed_global)
        return left // self.num_replicas if self.drop_last else math.ceil(left / self.num_replicas)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed_global": self.consumed_global, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if int(state["seed"]) != self.seed:
            raise UserError(f"data sampler seed {self.seed} differs from the checkpoint's {state['seed']}")
        self.epoch = int(state["epoch"])
        self.consumed_global = int(state["consumed_global"])
