"""Same seed, same numbers: the demo's chain (MAE pre-training -> fine-tuning from the MAE encoder ->
evaluation) run twice at 2 threads gives bit-identical weights and per-case metrics."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch


def _weights_digest(folder: Path) -> str:
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        state = load_file(path)
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _chain(out: Path) -> dict:
    from samadapt.demo import pipeline
    from samadapt.demo.budget import QUICK
    from samadapt.finetune.training import FinetuneConfig, finetune

    # 128-px MAE so that stage 3's 14-token windows pad the 8x8 grid (the padding-key gradient)
    budget = dataclasses.replace(QUICK, fa_train=4, fa_val=2, fa_test=2, fa_unlabeled=16, pretrain_size=128,
                                 pretrain_batch=8, pretrain_epochs=2)
    data = pipeline.make_data(out, budget, pipeline.DemoInput(None), seed=0)
    pretrain = pipeline.run_pretraining(out, budget, data, seed=0)
    run = out / "finetune" / "mae-init"
    finetune(FinetuneConfig(data=data["dataset"], splits=data["splits"], out=str(run), image_size=64,
                            init=f"mae:{pretrain['run']}", train="all", epochs=1, batch_size=2, seed=0,
                            progress=False))
    evaluation = pipeline.evaluate_finetuned(out, data, {"mae-init": {"run": str(run)}})
    return {
        "encoder": _weights_digest(Path(pretrain["encoder"])),
        "mae_loss": pretrain["final_loss"],
        "finetuned": _weights_digest(run / "model"),
        "per_case": (Path(evaluation["mae-init"]["dir"]) / "per_case.csv").read_text(),
    }


@pytest.mark.slow
def test_pretrain_finetune_evaluate_twice_is_bit_identical(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = _chain(tmp_path / "a"), _chain(tmp_path / "b")
    finally:
        torch.set_num_threads(threads)
    assert first == second
