"""A Hugging Face Hub cache built by hand in a test folder (the layout huggingface_hub reads:
models--ORG--NAME/refs/REVISION -> commit, snapshots/COMMIT/FILES), so Hub weights are tested
with no network."""

from __future__ import annotations

import hashlib
from pathlib import Path


def add_cached_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main") -> Path:
    """Put `files` into `cache` as `repo_id` at `revision`; returns the snapshot folder."""
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    return snapshot
