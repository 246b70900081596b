"""`--init hf:ORG/NAME[/FILE][@REVISION]`: weights from the Hugging Face Hub, through its cache.

The repository is resolved to a local file or folder that `loading.read_weights` reads like any
other (`sam2:PATH`):
  * a transformers repository (`config.json` + `model.safetensors`, e.g. facebook/sam2.1-hiera-tiny)
    becomes its snapshot folder;
  * a repository of Meta-format checkpoints (MedSAM2's `.pt` files) needs the file named
    (`hf:ORG/NAME/FILE.pt`) unless it holds only one.
Downloads go to huggingface_hub's cache; HF_HUB_OFFLINE=1 (read when the command runs, not when
huggingface_hub was imported) restricts resolution to it, and HF_HOME / HF_HUB_CACHE say where it
is. Every failure (offline and not cached, unknown repository, revision or file, another
architecture, no network) is one `UserError` naming the `hf:` value.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from samadapt.errors import UserError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SAM_MODEL_TYPES = ("sam2", "sam2_video", "sam")
TRANSFORMERS_FILES = ["config.json", "*.safetensors"]
_TRUE = ("1", "on", "yes", "true")


@dataclass(frozen=True)
class HubRef:
    """`hf:ORG/NAME[/FILE][@REVISION]`: a Hub repository, optionally one file of it and a revision."""

    repo_id: str
    filename: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        return (f"hf:{self.repo_id}" + (f"/{self.filename}" if self.filename else "")
                + (f"@{self.revision}" if self.revision else ""))


def parse_hub_ref(text: str, option: str = "--init") -> HubRef:
    """'org/name/file.pt@v1' -> HubRef('org/name', 'file.pt', 'v1'); UserError on a malformed name."""
    where, at, revision = text.partition("@")
    parts = where.split("/")
    if len(parts) < 2 or not all(_HUB_NAME.fullmatch(p) for p in parts[:2]) or (at and not revision) \
            or any(p in ("", ".", "..") for p in parts[2:]):
        raise UserError(f"{option} 'hf:{text}': expected hf:ORG/NAME[/FILE][@REVISION], "
                        "e.g. hf:facebook/sam2.1-hiera-tiny or hf:ORG/NAME/weights.pt@main")
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]) or None, revision or None)


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder as the environment says now (HF_HUB_CACHE, then HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _hub_error(ref: HubRef, exc: Exception, offline: bool) -> UserError:
    from huggingface_hub import errors

    if isinstance(exc, errors.LocalEntryNotFoundError) or (offline and isinstance(exc, (OSError, ValueError))):
        return UserError(f"{ref}: not in the Hugging Face cache {hub_cache_dir()} and HF_HUB_OFFLINE is set "
                         "(download it once online, or point HF_HOME/HF_HUB_CACHE at a cache holding it)"
                         if offline else f"{ref}: not in the Hugging Face cache and the Hub cannot be reached")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return UserError(f"{ref}: no such repository on the Hugging Face Hub (or it is private/gated)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return UserError(f"{ref}: no such revision in the repository")
    if isinstance(exc, errors.EntryNotFoundError):
        return UserError(f"{ref}: no such file in the repository")
    reason = " ".join(str(exc).split())[:200]
    return UserError(f"{ref}: cannot fetch from the Hugging Face Hub ({type(exc).__name__}: {reason})")


def _repo_files(ref: HubRef, offline: bool, cache: Path) -> list[str]:
    """Files of the repository at the revision: from the cached snapshot offline, else from the Hub."""
    from huggingface_hub import HfApi, snapshot_download

    if offline:
        folder = Path(snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=cache, local_files_only=True))
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(HfApi().list_repo_files(ref.repo_id, revision=ref.revision))


def _check_architecture(ref: HubRef, folder: Path) -> None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{ref}: cannot read its config.json ({exc})") from None
    model_type = str(config.get("model_type", "")) if isinstance(config, dict) else ""
    if model_type not in SAM_MODEL_TYPES:
        raise UserError(f"{ref}: the repository holds a {model_type or 'unknown'!r} model (config.json model_type), "
                        "not SAM2 or SAM")


def _choose_file(ref: HubRef, files: list[str]) -> str | None:
    """None for a transformers repository (config.json + model.safetensors), else its one weights file."""
    if "config.json" in files and "model.safetensors" in files:
        return None
    weights = [f for f in files if f.endswith(WEIGHT_SUFFIXES)]
    if len(weights) == 1:
        return weights[0]
    if not weights:
        raise UserError(f"{ref}: the repository holds no SAM2/SAM weights (no config.json + model.safetensors, "
                        f"no {'/'.join(WEIGHT_SUFFIXES)} file)")
    shown = ", ".join(weights[:6]) + (f", ... ({len(weights) - 6} more)" if len(weights) > 6 else "")
    raise UserError(f"{ref}: the repository holds {len(weights)} weight files ({shown}); name one, "
                    f"e.g. hf:{ref.repo_id}/{weights[0]}")


def resolve_hub_weights(ref: HubRef) -> Path:
    """The local file or folder holding `ref`'s weights, downloaded into the cache if needed."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise UserError(f"{ref}: weights from the Hub need huggingface_hub (pip install huggingface_hub)") from None
    offline, cache = hub_offline(), hub_cache_dir()
    try:
        filename = ref.filename or _choose_file(ref, _repo_files(ref, offline, cache))
        if filename is not None:
            return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision, cache_dir=cache,
                                        local_files_only=offline))
        folder = Path(snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=cache, local_files_only=offline,
                                        allow_patterns=TRANSFORMERS_FILES))
    except UserError:
        raise
    except Exception as exc:  # huggingface_hub and its HTTP stack raise many types
        raise _hub_error(ref, exc, offline) from None
    _check_architecture(ref, folder)
    return folder
