"""Provenance by content: what a run was made from, as sha256 of the files, not their paths.

A splits file rewritten by `samadapt data split`, or a dataset description edited in place, keeps
its path; a run that recorded only the path would then be evaluated on cases it trained on. Runs
record `input_hashes(...)`; `--resume`, `evaluate --model`, `fewshot evaluate` and `compare` call
`check_same_inputs` and refuse, naming the file, what differs.
"""

from __future__ import annotations

from pathlib import Path

from samadapt.engine.atomic import sha256_file
from samadapt.errors import UserError

SPLITS_KEY = "splits_sha256"
DESCRIPTION_KEY = "description_sha256"
CACHE_KEY = "cache_manifest_sha256"
CACHE_MANIFEST = "cache.json"
IMAGES_KEY = "images_sha256"
INPUTS_FILE = "inputs.json"


def description_file(data: str | Path | None) -> Path | None:
    """The dataset description of `--data` (the file itself, or the one in the folder); None when the
    folder has none (its description is inferred from the files)."""
    if data is None:
        return None
    from samadapt.data.dataset import find_description

    data = Path(data)
    if data.is_file():
        return data
    return find_description(data) if data.is_dir() else None


def _digest(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    try:
        return sha256_file(path)
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror})", path) from None


def _files(splits=None, data=None, cache=None) -> dict[str, Path | None]:
    return {SPLITS_KEY: None if splits is None else Path(splits),
            DESCRIPTION_KEY: description_file(data),
            CACHE_KEY: None if cache is None else Path(cache) / CACHE_MANIFEST}


def input_hashes(splits=None, data=None, cache=None) -> dict[str, str]:
    """sha256 of the splits file, the dataset description and the cache manifest (those given), and
    where they were (resolved paths)."""
    hashes = {key: _digest(path) for key, path in _files(splits, data, cache).items()}
    paths = {"splits_path": splits, "data_path": data, "cache_path": cache}
    hashes.update({key: str(Path(value).resolve()) for key, value in paths.items() if value is not None})
    return {key: value for key, value in hashes.items() if value is not None}


def check_evaluation_inputs(recorded: dict, where: str | Path, splits=None, data=None) -> None:
    """What an evaluation of a run may use: the dataset description at the run's own data path must
    be the one it trained on, and on that same dataset (or at the run's own splits path) the splits
    file must be the one it trained with: otherwise a test part may hold cases the run trained on.
    Another dataset (an external test set) with its own splits passes."""
    same_data_path = data is not None and recorded.get("data_path") == str(Path(data).resolve())
    if same_data_path:
        check_same_inputs(recorded, where, data=data, only=(DESCRIPTION_KEY,))
    if splits is None:
        return
    same_splits_path = recorded.get("splits_path") == str(Path(splits).resolve())
    description = _digest(description_file(data))
    same_dataset = same_data_path or (description is not None and description == recorded.get(DESCRIPTION_KEY))
    if same_splits_path or same_dataset:
        check_same_inputs(recorded, where, splits=splits, only=(SPLITS_KEY,))


def check_same_inputs(recorded: dict, where: str | Path, splits=None, data=None, cache=None,
                      only: tuple[str, ...] | None = None) -> None:
    """Refuse (one line naming the file) an input whose content differs from the one recorded in
    `recorded` (a run's facts) by `input_hashes`; inputs the run did not record pass. `only`: the
    keys to compare (default: all given)."""
    for key, path in _files(splits, data, cache).items():
        if path is None or (only is not None and key not in only) or not recorded.get(key):
            continue
        actual = _digest(path)
        if actual is not None and actual != recorded[key]:
            raise UserError(f"differs from the file the run {where} was made with (sha256 {actual[:12]}, recorded "
                            f"{recorded[key][:12]}): it was changed or is another file; use the original, or start "
                            "a new run", path)


def image_list_hash(paths) -> dict:
    """For inputs that are folders of images (MAE pre-training): sha256 of the sorted list of each
    file's resolved path and size, and the count. Content is not read: folders of thousands of
    images would take minutes to hash, and adding, removing or replacing a file changes the list."""
    import hashlib

    rows = sorted(f"{Path(p).resolve()}\t{Path(p).stat().st_size}" for p in dict.fromkeys(paths))
    return {IMAGES_KEY: hashlib.sha256("\n".join(rows).encode()).hexdigest(), "images": len(rows)}


def check_resume_images(run_dir: str | Path, current: dict, option: str) -> None:
    """Refuse `--resume` when the images found now are not the ones the run started with."""
    recorded = _recorded_inputs(run_dir)
    if recorded.get(IMAGES_KEY) not in (None, current[IMAGES_KEY]):
        raise UserError(f"{option}: the images found ({current['images']}) are not the {recorded.get('images')} "
                        f"the run {run_dir} started with (files added, removed or replaced); use the original "
                        "data, or start a new run")


def check_same_classes(expected: list[str], actual: list[str], what: str, where: str | Path) -> None:
    if list(expected) != list(actual):
        raise UserError(f"{what} has classes {list(actual)}, but the run was made with {list(expected)}", where)


def record_inputs(run_dir: str | Path, hashes: dict) -> None:
    """RUN_DIR/inputs.json: the content of the inputs, for `--resume` to compare with."""
    import json

    from samadapt.engine.atomic import atomic_write_text

    atomic_write_text(Path(run_dir) / INPUTS_FILE, json.dumps(hashes, indent=1, sort_keys=True) + "\n")


def _recorded_inputs(run_dir: str | Path) -> dict:
    """RUN_DIR/inputs.json as `record_inputs` wrote it; empty for a run from before inputs were recorded."""
    import json

    try:
        recorded = json.loads((Path(run_dir) / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def check_resume_inputs(run_dir: str | Path, splits=None, data=None, cache=None) -> None:
    """Refuse `--resume` with inputs whose content differs from those the run started with."""
    check_same_inputs(_recorded_inputs(run_dir), run_dir, splits=splits, data=data, cache=cache)
