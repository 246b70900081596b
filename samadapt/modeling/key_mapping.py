"""Renaming state-dict keys by explicit rules, and strict comparison against a model.

A conversion is a list of `(pattern, replacement)` regular-expression rules, each matched against
the whole key; the first rule that matches decides the new name. Keys the target architecture
does not use are listed explicitly (`known_unused`) so that anything else that fails to match is
reported as an unexpected key instead of disappearing silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samadapt.errors import UserError

Rule = tuple[str, str]


def prompt_encoder_rules(source: str) -> list[Rule]:
    """Rules for the prompt encoder's embeddings and mask-downscaling convs, which SAM and SAM2 store
    alike under different prefixes (`prompt_encoder` / `sam_prompt_encoder`)."""
    rules = [(rf"{source}\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight")]
    layers = {0: "conv1", 1: "layer_norm1", 3: "conv2", 4: "layer_norm2", 6: "conv3"}
    rules += [(rf"{source}\.mask_downscaling\.{index}\.(weight|bias)", rf"prompt_encoder.mask_embed.{name}.\1")
              for index, name in layers.items()]
    return rules


def mlp_rules(source: str, target: str, depth: int) -> list[Rule]:
    """Rules for an MLP stored as `layers.0..depth-1` (Meta) -> `proj_in`, `layers.i`, `proj_out`.

    `source` may contain groups that `target` refers to; the weight/bias group comes after them.
    """
    last = f"\\g<{re.compile(source).groups + 1}>"
    names = ["proj_in", *(f"layers.{i - 1}" for i in range(1, depth - 1)), "proj_out"]
    return [
        (rf"{source}\.layers\.{i}\.(weight|bias)", f"{target}.{name}.{last}") for i, name in enumerate(names)
    ]


@dataclass
class Converted:
    """Result of renaming: the new state dict, keys recognised as unused, keys no rule matched."""

    state_dict: dict[str, torch.Tensor]
    unused: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def rename_keys(
    state_dict: Mapping[str, torch.Tensor],
    rules: Iterable[Rule],
    known_unused: Iterable[str] = (),
) -> Converted:
    """Apply `rules` to every key; `known_unused` are full-match patterns of keys to drop."""
    compiled = [(re.compile(p), r) for p, r in rules]
    unused_patterns = [re.compile(p) for p in known_unused]
    out = Converted({})
    for key, value in state_dict.items():
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                new_key = pattern.sub(replacement, key)
                if new_key in out.state_dict:
                    raise UserError(f"two checkpoint keys map to {new_key!r} (one is {key!r})")
                out.state_dict[new_key] = value
                break
        else:
            if any(p.fullmatch(key) for p in unused_patterns):
                out.unused.append(key)
            else:
                out.unmatched.append(key)
    return out


def _sample(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_strict(
    converted: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    extra_unexpected: list[str] = (),
    what: str = "model",
) -> None:
    """Raise `UserError` naming `path` on missing keys, unexpected keys or shape mismatches."""
    missing = [k for k in expected if k not in converted]
    unexpected = list(extra_unexpected) + [k for k in converted if k not in expected]
    shapes = [
        f"{k} {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in converted and tuple(converted[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_sample(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_sample(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (checkpoint vs {what}): {_sample(shapes, 3)}")
    if problems:
        raise UserError(f"{path}: does not match {what}: " + "; ".join(problems), path)


def interpolate_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a (L, C) relative-position table to (length, C) linearly, as SAM's ViT does on
    the fly when its input size differs from the trained one."""
    if table.shape[0] == length:
        return table
    resized = torch.nn.functional.interpolate(
        table.float().T[None], size=length, mode="linear", align_corners=False
    )[0].T
    return resized.to(table.dtype).contiguous()


def interpolate_grid(pos: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a (1, H, W, C) absolute position embedding to (1, side, side, C), bicubic."""
    if pos.shape[1] == side and pos.shape[2] == side:
        return pos
    resized = torch.nn.functional.interpolate(
        pos.float().permute(0, 3, 1, 2), size=(side, side), mode="bicubic", align_corners=False
    )
    return resized.permute(0, 2, 3, 1).to(pos.dtype).contiguous()
