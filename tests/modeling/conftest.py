"""A tiny SAM2 Hiera-T trunk with non-trivial position embeddings and biases (zeros would hide bugs)."""

from __future__ import annotations

import pytest
import torch
from transformers import Sam2HieraDetConfig, Sam2HieraDetModel


def make_trunk(size: int = 256, perturb: bool = True) -> Sam2HieraDetModel:
    trunk = Sam2HieraDetModel(Sam2HieraDetConfig(image_size=[size, size])).eval()
    if perturb:
        with torch.no_grad():
            trunk.pos_embed.normal_()
            trunk.pos_embed_window.normal_()
            for name, param in trunk.named_parameters():
                if name.endswith("bias"):
                    param.normal_(std=0.5)
    return trunk


@pytest.fixture(scope="module")
def trunk256():
    torch.manual_seed(0)
    return make_trunk(256)
