"""Training-state checkpoints that are complete, verified and safe to load.

Layout of a run's checkpoint folder (`RUN_DIR/checkpoints/`)::

    ckpt-00000120.pt      training state after optimiser step 120 (torch.save zip format)
    ckpt-00000120.json    its record: sha256 of the .pt, size, step, epoch, meta
    latest                name of the newest complete checkpoint (plain text)
    best.pt / best.json   model weights of the best validation result (same format)

Write order is what makes a crash harmless: the .pt is written to a temporary file and renamed,
then its record is written the same way, and only then is `latest` replaced. A file without a
record is unfinished and never loaded. On load the sha256 is checked first, then the file is read
with `torch.load(weights_only=True)`, which only rebuilds tensors and plain containers: a pickle
that tries to construct arbitrary objects (and so could run code) is refused with a `UserError`.

`meta` is a JSON-serialisable dict describing the run (its configuration); `check_same_config`
refuses to resume a run with a different configuration, naming the differing key.

Example::

    save_training_state(run_dir / "checkpoints", step=120, state={"model": model.state_dict()},
                        meta={"lr": 1e-4}, keep_last=3)
    state, meta, path = load_resumable(run_dir / "checkpoints")
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from samadapt.engine.atomic import atomic_file, atomic_write_text, ensure_writable_dir, sha256_file
from samadapt.errors import UserError

FORMAT_VERSION = 1
LATEST = "latest"
_STEP_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")
log = logging.getLogger("samadapt.engine.checkpoint")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{int(step):08d}.pt"


def record_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def write_checkpoint_file(path: str | Path, state: Mapping, meta: Mapping | None = None, **record) -> Path:
    """Write `state` (+ `meta`) to `path` atomically, then its sha256 record. Returns `path`."""
    path = Path(path)
    meta_json = _meta_to_json(meta or {})
    payload = {"format": FORMAT_VERSION, "meta_json": meta_json, **state}
    try:
        with atomic_file(path, "wb") as handle:
            torch.save(payload, handle)
    except RuntimeError as exc:
        # torch's zip writer reports a failed write (a full disk, a quota) as a RuntimeError, not an OSError
        if not any(sign in str(exc) for sign in ("failed writing", "write failed", "unexpected pos")):
            raise
        free_mb = shutil.disk_usage(path.parent).free / 2**20
        raise UserError(f"cannot write the checkpoint: torch's writer failed ({free_mb:.0f} MB free on this disk; "
                        "free some space, then --resume)", path) from None
    info = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "format": FORMAT_VERSION,
        **record,
        "meta": json.loads(meta_json),
    }
    atomic_write_text(record_path(path), json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def save_training_state(
    directory: str | Path, step: int, state: Mapping, meta: Mapping | None = None,
    keep_last: int | None = 3, epoch: int | None = None,
) -> Path:
    """Save the training state of optimiser step `step`, update `latest`, prune to `keep_last`."""
    directory = ensure_writable_dir(directory)
    _remove_stale_temporaries(directory)
    path = write_checkpoint_file(directory / checkpoint_name(step), state, meta, step=int(step), epoch=epoch)
    atomic_write_text(directory / LATEST, path.name + "\n")
    if keep_last is not None and keep_last > 0:
        for old in list_checkpoints(directory)[keep_last:]:
            for file in (old, record_path(old)):
                file.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Step checkpoints in `directory` that have a record, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _STEP_NAME.match(p.name) and record_path(p).is_file()]
    return sorted(found, key=lambda p: int(_STEP_NAME.match(p.name).group(1)), reverse=True)


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Verify and load one checkpoint file. Returns `(state, meta)`; any problem is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", path)
    record_file = record_path(path)
    if not record_file.is_file():
        raise UserError(f"checkpoint has no record {record_file.name}: it was never completed", path)
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        expected = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"checkpoint record {record_file.name} is unreadable", path) from None
    actual = sha256_file(path)
    if actual != expected:
        raise UserError(
            f"checkpoint content hash {actual[:12]}… does not match its record ({str(expected)[:12]}…): "
            "the file is truncated or corrupted", path)
    return _read_verified(path, map_location)


def _read_verified(path: Path, map_location) -> tuple[dict, dict]:
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols on stderr
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(
            "refusing to load checkpoint: it contains Python objects other than tensors and plain "
            f"containers, which could run code ({first[:160]})", path) from None
    except Exception as exc:  # zip/stream errors from a damaged file
        raise UserError(f"checkpoint is unreadable, truncated or corrupted ({type(exc).__name__})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise UserError(f"not a samadapt checkpoint (format {FORMAT_VERSION} expected)", path)
    try:
        meta = json.loads(payload.pop("meta_json"))
    except (KeyError, ValueError, TypeError):
        raise UserError("checkpoint meta data is missing or unreadable", path) from None
    payload.pop("format")
    return payload, meta


def load_resumable(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict, Path]:
    """The newest complete, verified checkpoint in `directory`: `(state, meta, path)`.

    Tries the `latest` pointer first, then every other checkpoint newest first; a damaged one is
    skipped with a warning naming it. Raises `UserError` when none can be loaded.
    """
    directory = Path(directory)
    candidates = list_checkpoints(directory)
    pointer = directory / LATEST
    if pointer.is_file():
        named = directory / pointer.read_text(encoding="utf-8").strip()
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    problems = []
    for path in candidates:
        try:
            state, meta = load_training_state(path, map_location)
        except UserError as exc:
            log.warning("skipping damaged checkpoint: %s", exc)
            problems.append(str(exc))
            continue
        return state, meta, path
    if problems:
        raise UserError(f"no complete checkpoint to resume from in {directory} ({'; '.join(problems)})", directory)
    raise UserError(f"no complete checkpoint to resume from in {directory}: the run stopped before its first "
                    "checkpoint was written; run the same command without --resume to start it again", directory)


def check_same_config(saved: Mapping, current: Mapping, may_differ: Iterable[str] = (), where: str | Path = "") -> None:
    """Raise a `UserError` naming the first key whose value differs between two run configs.

    Nested dicts are compared key by key (reported as `a.b`). Keys in `may_differ` (e.g. the number
    of epochs, which a resumed run may extend) are ignored: a dotted entry (`run.epochs`) names one
    key and everything below it, a bare name (`epochs`) that key at any depth.
    """
    saved_flat, current_flat = _flatten(json.loads(_meta_to_json(saved))), _flatten(json.loads(_meta_to_json(current)))
    allowed = set(may_differ)
    for key in sorted(set(saved_flat) | set(current_flat)):
        if _may_differ(key, allowed):
            continue
        old, new = saved_flat.get(key, "<absent>"), current_flat.get(key, "<absent>")
        if old != new:
            place = f" in {where}" if where else ""
            raise UserError(
                f"cannot resume: configuration key '{key}' was {old!r} in the run{place} but is {new!r} now "
                "(start a new run folder, or use the original settings)")


def _may_differ(key: str, allowed: set[str]) -> bool:
    parts = key.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    return bool(prefixes & allowed) or any(part in allowed for part in parts if "." not in part)


def capture_rng_state() -> dict:
    """Python, numpy, torch and CUDA random states as tensors and plain containers."""
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _meta_to_json(meta: Mapping) -> str:
    try:
        return json.dumps(meta, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise UserError(f"run configuration is not JSON-serialisable: {exc}") from None


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: value}


def _to_plain(value):
    return [_to_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _remove_stale_temporaries(directory: Path) -> None:
    # A process killed mid-write leaves `.<name>.<random>.tmp` behind; it can never be loaded, so drop it.
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    # Killed between the .pt and its record: the file can never be loaded, so it only takes space.
    for unfinished in directory.glob("ckpt-*.pt"):
        if _STEP_NAME.match(unfinished.name) and not record_path(unfinished).exists():
            unfinished.unlink(missing_ok=True)
