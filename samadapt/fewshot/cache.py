"""Encode every image (or slice) once with the frozen encoder and keep the features on disk.

Layout of a cache folder::

    cache.json                    model identity + one entry per item (see `FeatureCache`)
    features/<key>.safetensors    embedding (256, S/16, S/16) and, for SAM2, high_res_s4
                                  (32, S/4, S/4) and high_res_s8 (64, S/8, S/8), all float16

`key` is the sha256 of (image file content, slice index, model name, weights fingerprint, input
size, preprocessing version, dtype). A re-run therefore finds every unchanged item already on disk
and encodes only new or changed ones; changing the model, its weights or the input size changes
every key, and the files an earlier build wrote that the new manifest no longer names are deleted
(only those: the manifest lists every file the cache wrote). Files are written one by one and
atomically, and the manifest after every batch, so an interrupted build keeps what it finished and
the next one reuses it. safetensors files are memory-mapped
on read, so training touches only the items it uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from samadapt.data.intensity import check_same_intensity
from samadapt.data.volumes import volume_sha256
from samadapt.engine.atomic import current_umask
from samadapt.engine.atomic import sha256_file as file_sha256
from samadapt.errors import UserError
from samadapt.fewshot.config import CacheSettings
from samadapt.fewshot.items import (
    PREPROCESS_VERSION,
    Item,
    case_items,
    model_input,
    unit_images,
)

CACHE_FORMAT = "samadapt-fewshot-cache"
CACHE_VERSION = 1
MANIFEST = "cache.json"
FEATURE_DIR = "features"
CACHE_DTYPE = torch.float16
# Random weights (no --weights) must be the same model in `cache`, `train` and `predict`.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ModelIdentity:
    """What decides the cached features besides the image: the model, its weights, its input size."""

    name: str
    image_size: int
    weights: str | None  # resolved path, or None for seeded random weights
    weights_fingerprint: str

    def to_dict(self) -> dict:
        return {"name": self.name, "image_size": self.image_size, "weights": self.weights,
                "weights_fingerprint": self.weights_fingerprint}


def weights_fingerprint(weights: str | Path | None) -> str:
    """sha256 of a weights file, or of the files of a weights folder; 'random-seed-0' for none."""
    if weights is None:
        return f"random-seed-{RANDOM_INIT_SEED}"
    path = Path(weights)
    if not path.exists():
        raise UserError("weights not found", path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def build_frozen_model(name: str, weights: str | Path | None, image_size: int, fast: bool = True):
    """The model whose encoder makes (or made) the cache, in eval mode with no gradients.

    Without weights the random initialisation is seeded, so the same model comes back in every
    command (the global RNG state is left untouched). `fast` routes `encode` through
    `samadapt.modeling.fast` (SAM2 only; same features within 1e-4).
    """
    from samadapt.modeling.loading import load_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = load_model(name, weights=weights, image_size=image_size)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if fast:  # frozen and inference-only: the fast encoder gives the same features, sooner
        from samadapt.modeling.fast import accelerate

        accelerate(model, compile=False, announce=False)
    return model.eval()


def model_identity(name: str, weights: str | Path | None, image_size: int) -> ModelIdentity:
    from samadapt.modeling.registry import get_spec

    spec = get_spec(name)
    spec.check_image_size(image_size)
    # Resolved: training later rebuilds the encoder from this path, whatever its working folder.
    return ModelIdentity(spec.name, int(image_size), None if weights is None else str(Path(weights).resolve()),
                         weights_fingerprint(weights))


def item_key(content_sha256: str, slice_index: int | None, identity: ModelIdentity, intensity: str | None = None) -> str:
    """Features of one item are reused only while all of these are unchanged (`intensity`: a 3D
    case's setting from its dataset description)."""
    text = json.dumps([content_sha256, slice_index, identity.name, identity.weights_fingerprint,
                       identity.image_size, PREPROCESS_VERSION, str(CACHE_DTYPE)] + ([intensity] if intensity else []))
    return hashlib.sha256(text.encode()).hexdigest()


class FeatureCache:
    """A cache folder opened for reading.

    `entries[item_id]` = {key, file, case, slice, source, content_sha256, original_hw, resized_hw, bytes}.
    """

    def __init__(self, directory: str | Path):
        from samadapt.engine.run_folder import refuse_incomplete

        self.directory = Path(directory)
        refuse_incomplete(self.directory, "feature cache")
        manifest = self.directory / MANIFEST
        if not manifest.is_file():
            raise UserError(f"not a few-shot feature cache (no {MANIFEST}); build one with `samadapt fewshot cache`",
                            self.directory)
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cache manifest is unreadable ({exc})", manifest) from None
        if data.get("format") != CACHE_FORMAT or data.get("version") != CACHE_VERSION:
            raise UserError(f"not a {CACHE_FORMAT} version {CACHE_VERSION} manifest", manifest)
        if data.get("complete") is False:
            raise UserError("feature cache is incomplete (its build was interrupted): run `samadapt fewshot cache` "
                            "again to finish it", self.directory)
        self.manifest = data
        self.identity = ModelIdentity(**data["model"])
        self.entries: dict[str, dict] = data["entries"]

    def check_model(self, name: str | None = None, image_size: int | None = None) -> None:
        """Refuse a cache made with another model or input size than the caller intends to use."""
        from samadapt.modeling.registry import get_spec

        if name is not None and get_spec(name).name != self.identity.name:
            raise UserError(f"cache was built with model {self.identity.name}, not {get_spec(name).name}: "
                            "rebuild it with `samadapt fewshot cache`", self.directory)
        if image_size is not None and int(image_size) != self.identity.image_size:
            raise UserError(f"cache was built at {self.identity.image_size} px, not {image_size} px: "
                            "rebuild it with `samadapt fewshot cache`", self.directory)
        if self.manifest.get("preprocess") != PREPROCESS_VERSION:
            raise UserError("cache was built with another preprocessing version: rebuild it", self.directory)

    def check_weights(self) -> str | None:
        """The weights the features were made with, after checking that the file is still the same.

        Training rebuilds the encoder from this path and saves it with the decoder; replaced weights
        would pair a decoder trained on the cached features with another encoder."""
        weights = self.identity.weights
        if weights is None:
            return None
        if not Path(weights).exists():
            raise UserError("the weights this feature cache was built with are gone: restore them or rebuild the "
                            "cache with `samadapt fewshot cache`", weights)
        if weights_fingerprint(weights) != self.identity.weights_fingerprint:
            raise UserError("weights changed since the feature cache was built (fingerprint differs): rebuild the "
                            f"cache {self.directory} with `samadapt fewshot cache`", weights)
        return weights

    def entry(self, item_id: str) -> dict:
        if item_id not in self.entries:
            raise UserError(f"item {item_id!r} is not in the feature cache: run `samadapt fewshot cache` on its dataset",
                            self.directory)
        return self.entries[item_id]

    def check_current(self, item: Item, content_sha256: str | None = None) -> None:
        """Refuse an item whose image file changed since it was cached."""
        entry = self.entry(item.item_id)
        actual = content_sha256 or volume_sha256(item.case.image)
        if actual != entry["content_sha256"]:
            raise UserError(f"image of {item.item_id!r} changed since it was cached: rebuild the cache", item.case.image)
        if item.case.dims == "3d":
            check_same_intensity(entry.get("intensity"), item.case.intensity, f"the cached features of {item.item_id!r}",
                                 self.directory)

    def load(self, item_id: str, dtype: torch.dtype = torch.float32):
        """`ImageFeatures` of one item with a batch axis of 1 (memory-mapped read, then cast)."""
        from safetensors import safe_open

        from samadapt.modeling.segment_anything import ImageFeatures

        path = self.directory / self.entry(item_id)["file"]
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors = {k: handle.get_tensor(k).to(dtype)[None] for k in handle.keys()}
        except Exception as exc:
            raise UserError(f"cached features are unreadable ({type(exc).__name__}); rebuild the cache", path) from None
        return ImageFeatures.from_dict(tensors)


@dataclass
class CacheReport:
    items: int
    encoded: int
    reused: int
    removed_stale: int
    total_bytes: int
    seconds_encoding: float
    seconds_total: float

    @property
    def bytes_per_item(self) -> float:
        return self.total_bytes / max(1, self.items)


def _write_features(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.to(CACHE_DTYPE).contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in meta.items()})
        os.chmod(tmp, 0o666 & ~current_umask())  # safetensors writes 0600; the cache follows the umask
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def build_cache(cases, out: str | Path, name: str, weights: str | Path | None, image_size: int,
                batch_size: int = CacheSettings.batch_size, on_item: Callable[[str, bool], None] | None = None, model=None) -> CacheReport:
    """Encode every item of `cases` not yet cached under the current model identity.

    Args:
        cases: `Case`s (2D images or 3D volumes; labels are not needed).
        model: an already built frozen model to use (otherwise built only if something must be encoded).
        on_item: called with (item_id, reused) per item (progress display).
    """
    from samadapt.engine.atomic import ensure_writable_dir

    started = time.perf_counter()
    identity = model_identity(name, weights, image_size)
    out = ensure_writable_dir(out)
    feature_dir = ensure_writable_dir(out / FEATURE_DIR)
    previous, owned = _previous_manifest(out)
    done: dict[str, dict] = {}

    def record_progress(finished: dict[str, dict]) -> None:
        # after every batch: an interrupted build keeps, and the next one reuses, what it finished
        done.update(finished)
        _write_manifest(out, identity, {**previous, **done}, owned | _files_of(done), complete=False)

    encoder = _BatchEncoder(out, identity, weights, model, batch_size, on_item, record_progress)
    entries, reused = _plan_items(cases, out, identity, encoder, on_item, previous)
    encoder.flush()
    if not entries:
        raise UserError("no images to cache")
    _write_manifest(out, identity, entries, _files_of(entries))
    removed = _remove_stale_features(out, feature_dir, owned | _files_of(previous) | _files_of(done), entries)
    total = sum(e["bytes"] for e in entries.values())
    return CacheReport(len(entries), encoder.encoded, reused, removed, total, encoder.seconds,
                       time.perf_counter() - started)


def _files_of(entries: dict[str, dict]) -> set[str]:
    return {e["file"] for e in entries.values() if isinstance(e, dict) and isinstance(e.get("file"), str)}


class _BatchEncoder:
    """Collects the items that must be encoded and encodes them `batch_size` at a time, writing each
    item's features as soon as its batch is done (an interrupted build keeps them). The model is
    built only when the first batch is due, so a cache that is already complete never loads it."""

    def __init__(self, out: Path, identity: ModelIdentity, weights, model, batch_size: int,
                 on_item: Callable[[str, bool], None] | None,
                 on_flush: Callable[[dict[str, dict]], None] | None = None):
        self.out, self.identity, self.weights, self.model = out, identity, weights, model
        self.batch_size, self.on_item, self.on_flush = batch_size, on_item, on_flush
        self.pending: list[tuple[str, dict, object]] = []  # (item_id, entry, unit image)
        self.encoded, self.seconds = 0, 0.0

    def add(self, item_id: str, entry: dict, unit) -> None:
        self.pending.append((item_id, entry, unit))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if self.model is None:
            self.model = build_frozen_model(self.identity.name, self.weights, self.identity.image_size)
        inputs, boxes = zip(*(model_input(unit, self.identity.image_size) for _, _, unit in self.pending))
        start = time.perf_counter()
        with torch.inference_mode():  # on the model's device (a caller may pass one on the GPU)
            features = self.model.encode(torch.stack(inputs).to(next(self.model.parameters()).device))
        self.seconds += time.perf_counter() - start
        for index, ((item_id, entry, _), box) in enumerate(zip(self.pending, boxes)):
            path = self.out / entry["file"]
            _write_features(path, {k: v[index] for k, v in features.as_dict().items()},
                            {"item": item_id, "model": self.identity.to_dict()})
            entry.update(original_hw=list(box.original_hw), resized_hw=list(box.resized_hw), bytes=path.stat().st_size)
            self.encoded += 1
            if self.on_item is not None:
                self.on_item(item_id, False)
        if self.on_flush is not None:
            self.on_flush({item_id: entry for item_id, entry, _ in self.pending})
        self.pending.clear()


def _plan_items(cases, out: Path, identity: ModelIdentity, encoder: _BatchEncoder,
                on_item: Callable[[str, bool], None] | None, previous: dict[str, dict]) -> tuple[dict[str, dict], int]:
    """The manifest entry of every item of `cases`: reused when the previous build left a valid file
    under the same key, otherwise handed to `encoder`. Returns (entries by item id, reused count)."""
    entries: dict[str, dict] = {}
    reused = 0
    for case in cases:
        content = volume_sha256(case.image)
        units = None
        for item in case_items(case):
            intensity = case.intensity if case.dims == "3d" else None
            key = item_key(content, item.slice_index, identity, intensity)
            entry = {"key": key, "file": f"{FEATURE_DIR}/{key}.safetensors", "case": case.id, "slice": item.slice_index,
                     "source": str(case.image), "content_sha256": content}
            if intensity is not None:
                entry["intensity"] = intensity
            if item.item_id in entries:
                raise UserError(f"two items share the id {item.item_id!r}", case.image)
            entries[item.item_id] = entry
            old = previous.get(item.item_id)
            if (out / entry["file"]).is_file() and isinstance(old, dict) and old.get("key") == key \
                    and "bytes" in old:
                entry.update(original_hw=old["original_hw"], resized_hw=old["resized_hw"], bytes=old["bytes"])
                reused += 1
                if on_item is not None:
                    on_item(item.item_id, True)
                continue
            if units is None:  # decode the image/volume only when something of it must be encoded
                units = unit_images(case)
            encoder.add(item.item_id, entry, units[item.slice_index or 0])
    return entries, reused


def _write_manifest(out: Path, identity: ModelIdentity, entries: dict[str, dict], files: set[str],
                    complete: bool = True) -> None:
    """The manifest; `files`: every feature file this cache wrote and still holds (the only files a
    later build may delete); `complete` False while a build is still adding items."""
    from samadapt.engine.atomic import atomic_write_text

    manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "model": identity.to_dict(),
                "preprocess": PREPROCESS_VERSION, "dtype": str(CACHE_DTYPE).removeprefix("torch."),
                "complete": complete, "files": sorted(files), "entries": entries}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _remove_stale_features(out: Path, feature_dir: Path, owned: set[str], entries: dict[str, dict]) -> int:
    """Delete the feature files an earlier build of this cache wrote that the manifest no longer
    names (another model, size or image version: no longer valid), and the temporaries of a killed
    build; any other file is left alone, whoever put it there. Returns how many."""
    wanted = _files_of(entries)
    removed = 0
    for name in sorted(owned - wanted):
        file = out / name
        if file.parent == feature_dir and file.is_file():
            file.unlink()
            removed += 1
    for leftover in feature_dir.glob(".*.safetensors.tmp"):
        leftover.unlink(missing_ok=True)
    return removed


def _previous_manifest(out: Path) -> tuple[dict[str, dict], set[str]]:
    """(entries, files written) of the cache already in `out`, complete or not; empty when none."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, set()
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
        return {}, set()
    files = {f for f in data.get("files") or () if isinstance(f, str)}
    return data["entries"], files
