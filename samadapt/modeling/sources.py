"""Where a command's starting weights come from: the `--init` option, one grammar for every command.

    random        seeded random weights (nothing to download; outputs mean nothing until trained)
    sam2:PATH     released weights: Meta's SAM2/SAM2.1 .pt or SAM .pth file, a Hugging Face folder,
                  or a samadapt checkpoint folder
    mae:RUN_DIR   the image encoder of a `samadapt pretrain` run (RUN_DIR/encoder)
    ckpt:DIR      a samadapt checkpoint folder, or a fine-tuning run folder (its model/)
    hf:ORG/NAME[/FILE][@REVISION]
                  weights from the Hugging Face Hub, through its local cache (`modeling/hub.py`):
                  a transformers SAM2/SAM repository, or one Meta-format file of a repository
                  (MedSAM2's `.pt` files); honours HF_HUB_OFFLINE, HF_HOME and HF_HUB_CACHE

Every command parses the option with `parse_init(text, accepts=...)`: the kinds a command has no
use for are refused in one line that says what it takes instead. This module stays free of torch
so that the commands can check the option before any slow import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samadapt.errors import UserError, warn
from samadapt.modeling.hub import HubRef, parse_hub_ref

INIT_OPTION = "--init"
INIT_DEFAULT = "random"
INIT_KINDS = ("random", "sam2", "hf", "mae", "ckpt")
_SYNTAX = {"random": "random", "sam2": "sam2:PATH", "hf": "hf:ORG/NAME[@REVISION]", "mae": "mae:RUN_DIR",
           "ckpt": "ckpt:DIR"}
_MEANING = {
    "random": "random",
    "sam2": "sam2:PATH (Meta .pt/.pth, Hugging Face folder or samadapt checkpoint)",
    "hf": "hf:ORG/NAME (Hugging Face Hub, through its cache; /FILE and @REVISION optional, e.g. hf:facebook/sam2.1-hiera-tiny)",
    "mae": "mae:RUN_DIR (encoder of a `samadapt pretrain` run)",
    "ckpt": "ckpt:DIR (samadapt checkpoint or fine-tuning run)",
}
# Kinds that name released SAM2/SAM weights (a file or folder, here or on the Hub).
RELEASED_KINDS = ("sam2", "hf")

SAM2_RELEASE_PAGE = "https://github.com/facebookresearch/sam2"
SAM_RELEASE_PAGE = "https://github.com/facebookresearch/segment-anything"
HF_PAGE = "https://huggingface.co"


@dataclass(frozen=True)
class InitSource:
    """A parsed `--init` value: its kind and, except for random, the path (or Hub name) it names."""

    kind: str
    path: Path | None = None
    hub: HubRef | None = None

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    def __str__(self) -> str:
        if self.hub is not None:
            return str(self.hub)
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def _listing(kinds, words: dict[str, str] = _SYNTAX) -> str:
    names = [words[k] for k in INIT_KINDS if k in kinds]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def init_help(accepts=INIT_KINDS) -> str:
    """The option's help text for a command that takes the kinds `accepts`."""
    return f"Starting weights: {_listing(accepts, _MEANING)}."


def parse_init(text: str, accepts=INIT_KINDS, command: str | None = None,
               reasons: dict[str, str] | None = None) -> InitSource:
    """'random' -> InitSource('random'); 'mae:runs/x' -> InitSource('mae', Path('runs/x')).

    A kind outside `accepts` is a `UserError` naming what `command` takes (and why not, from
    `reasons`); a bare path is refused with the spelling that was probably meant.
    """
    text = str(text).strip()
    kind, colon, rest = text.partition(":")
    if kind not in INIT_KINDS or (kind == "random") == bool(colon) or (colon and not rest):
        hint = f" (for a weights file or folder: sam2:{text})" if kind not in INIT_KINDS and text else ""
        raise UserError(f"{INIT_OPTION} {text!r}: use {_listing(accepts)}{hint}")
    if kind not in accepts:
        why = (reasons or {}).get(kind)
        who = f"{command} takes" if command else "use"
        raise UserError(f"{INIT_OPTION} {text}: " + (f"{why}; " if why else "") + f"{who} {_listing(accepts)}")
    if kind == "hf":
        return InitSource(kind, hub=parse_hub_ref(rest, INIT_OPTION))
    return InitSource(kind, Path(rest) if rest else None)


def weights_path(source: InitSource) -> Path | None:
    """The file or folder `samadapt.modeling.loading.load_model` reads for `source` (None: random).

    For the commands that build a plain Segment Anything model; fine-tuning has its own reading of
    mae: and ckpt: (it keeps class prompts and loads only the encoder; see finetune/init.py).
    """
    if source.is_random:
        return None
    if source.kind == "hf":
        from samadapt.modeling.hub import resolve_hub_weights

        return resolve_hub_weights(source.hub)
    if source.kind == "mae":
        from samadapt.pretrain.export import resolve_encoder_dir

        return resolve_encoder_dir(source.path)
    if source.kind == "ckpt":
        from samadapt.finetune.runs import BASELINE_INFO, MODEL_DIR
        from samadapt.modeling.model_folder import METADATA_FILE

        folder = source.path / MODEL_DIR if (source.path / MODEL_DIR).is_dir() else source.path
        if (folder / BASELINE_INFO).is_file():
            raise UserError("run holds a convolutional baseline, not a Segment Anything model", source.path)
        if not (folder / METADATA_FILE).is_file():
            raise UserError(f"not a samadapt checkpoint folder ({METADATA_FILE}) or fine-tuning run; "
                            "for Meta or Hugging Face weights use sam2:PATH", source.path)
        return folder
    return source.path


def official_weights(model_name: str) -> str:
    """Where the released weights of `model_name` come from, in one sentence."""
    from samadapt.modeling.registry import get_spec

    spec = get_spec(model_name)
    page = SAM2_RELEASE_PAGE if spec.family == "sam2" else SAM_RELEASE_PAGE
    return (f"official weights: Meta's {spec.meta_checkpoint} from {page} or the Hugging Face folder "
            f"{HF_PAGE}/{spec.hf_repo}, then {INIT_OPTION} sam2:PATH")


def warn_random_weights(model_name: str, outputs: str) -> None:
    """One loud line on stderr: `outputs` come from an untrained model, and where trained weights are."""
    from samadapt.modeling.registry import get_spec

    name = get_spec(model_name).name
    warn(f"{name} has RANDOM, UNTRAINED weights ({INIT_OPTION} random): {outputs} mean nothing; "
         f"{official_weights(name)}")
