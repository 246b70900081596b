"""An output folder as a unit: one writer at a time, marked incomplete until its command finishes.

Every command that writes a folder enters `run_folder(out, inputs=...)`:

- the folder is refused when it is, or is inside, one of the command's inputs (a dataset, a cache);
- an exclusive lock (`.samadapt.lock`, `fcntl.flock`) is taken: a second writer gets one line, exit 2;
- `.samadapt-incomplete` is written at the start and removed when the command succeeds, so that a
  crash, a kill or a failure halfway leaves a folder that readers (`refuse_incomplete`) refuse;
- staging folders and temporaries a killed earlier run left behind (`.NAME.XXXX.staging`,
  `.NAME.XXXX.tmp`: the names `engine.atomic` gives them) are removed, now that no one else writes;
- a command that fails before writing anything leaves the folder exactly as it was (a folder it
  created is removed again), so a refused `--resume` or a bad input changes nothing.

Under torchrun only rank 0 takes the lock and writes the marker: every rank runs the same command
on the same folder.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from samadapt.errors import UserError

LOCK_FILE = ".samadapt.lock"
INCOMPLETE_FILE = ".samadapt-incomplete"
OWN_FILES = (LOCK_FILE, INCOMPLETE_FILE)
_RANDOM = "?" * 8  # the random part of a name from tempfile.mkstemp / mkdtemp


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def dataset_inputs(path: str | Path | None) -> list[Path]:
    """What a `--data` input stands for: the folder itself, or a description file and the image and
    mask folders it names."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".yaml", ".yml", ".json"):
        return [path]
    from samadapt.data.dataset import read_description

    try:
        spec = read_description(path)
    except UserError:
        return [path]  # the command's own reading of it says what is wrong
    return [path, *(p for p in (spec.images, spec.masks) if p is not None)]


def refuse_output_in_inputs(out: str | Path, inputs: Iterable[str | Path | None],
                            models: Iterable[str | Path | None] = ()) -> None:
    """Refuse an output folder that is, or is inside, an input folder (or is an input file), or that
    is one of the `models` (run folders, which may hold outputs: RUN/eval, RUN/predictions)."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if _inside(target, source) if source.is_dir() else target == source:
            raise UserError(f"output folder is, or is inside, the input {given}: choose an --out outside it", out)
    for given in models:
        if given is not None and Path(given).resolve() == target:
            raise UserError(f"output folder is the model folder {given}: choose another --out", out)


def refuse_incomplete(folder: str | Path, what: str = "folder") -> None:
    """Raise a one-line `UserError` when `folder` (or the run folder holding it) is marked incomplete."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        if (candidate / INCOMPLETE_FILE).is_file():
            busy = _locked_by_someone(candidate)
            state = ("is still being written by another samadapt command" if busy else
                     "is incomplete: the command writing it failed or was interrupted; rerun it (training: with --resume)")
            raise UserError(f"{what} {state}", candidate)


def _locked_by_someone(folder: Path) -> bool:
    import fcntl

    try:
        handle = open(folder / LOCK_FILE, "rb")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Names, kinds, sizes and modification times under `folder`, the folder's own files excluded."""
    state = {}
    for path in folder.rglob("*"):
        if path.name in OWN_FILES and path.parent == folder:
            continue
        with contextlib.suppress(OSError):
            info = path.lstat()
            state[str(path.relative_to(folder))] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns)
    return state


def clean_stale_staging(folder: Path) -> int:
    """Remove what a killed earlier writer of `folder` left: its staging folders next to it and the
    staging folders and temporaries inside it (names only `engine.atomic` gives). Returns how many."""
    leftovers = list(folder.parent.glob(f".{glob.escape(folder.name)}.{_RANDOM}.staging"))
    leftovers += [p for p in folder.rglob(f".*.{_RANDOM}.staging") if p.is_dir()]
    leftovers += [p for p in folder.rglob(f".*.{_RANDOM}.tmp") if p.is_file()]
    for leftover in leftovers:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return len(leftovers)


class RunFolder:
    """The folder being written; `keep_incomplete()` leaves the marker at the end (an interrupted
    training run: consistent, resumable, but not a finished result)."""

    def __init__(self, path: Path, created: bool):
        self.path, self.created = path, created
        self.incomplete_at_end = False

    def keep_incomplete(self) -> None:
        self.incomplete_at_end = True


def _lock(path: Path):
    import fcntl

    handle = open(path / LOCK_FILE, "a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _create(out: Path) -> Path | None:
    """Create `out` if needed: the topmost folder created (None when `out` existed)."""
    from samadapt.engine.atomic import check_output_dir, ensure_writable_dir

    check_output_dir(out)
    if not out.exists():  # the topmost folder made, so that an early failure can remove it all
        top = out
        while not top.parent.exists():
            top = top.parent
        ensure_writable_dir(out)
        return top
    return None


@contextlib.contextmanager
def run_folder(out: str | Path, inputs: Iterable[str | Path | None] = (),
               models: Iterable[str | Path | None] = ()) -> Iterator[RunFolder]:
    """Hold `out` as this command's output folder for the duration of the block (see the module)."""
    from samadapt.engine.atomic import atomic_write_text

    out = Path(out)
    refuse_output_in_inputs(out, inputs, models)
    if not _is_main_rank():
        yield RunFolder(out, False)
        return
    top = _create(out)
    parent_times = out.stat() if top is None else None
    had_lock_file = (out / LOCK_FILE).exists()
    had_marker = (out / INCOMPLETE_FILE).exists()
    handle = _lock(out)
    if handle is None:
        raise UserError("another samadapt command is writing to this folder; wait for it to finish or choose "
                        "another --out", out)
    folder = RunFolder(out, top is not None)
    try:
        clean_stale_staging(out)
        before = _snapshot(out)
        atomic_write_text(out / INCOMPLETE_FILE, json.dumps({"pid": os.getpid(), "started": time.time()}) + "\n")
        try:
            yield folder
        except BaseException:
            if _snapshot(out) == before:  # nothing written: leave the folder as it was
                _undo(out, top, had_lock_file, had_marker, parent_times)
            raise
        if not folder.incomplete_at_end:
            (out / INCOMPLETE_FILE).unlink(missing_ok=True)
    finally:
        handle.close()


def _undo(out: Path, top: Path | None, had_lock_file: bool, had_marker: bool, times) -> None:
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
        return
    if not had_marker:
        (out / INCOMPLETE_FILE).unlink(missing_ok=True)
    if not had_lock_file:
        (out / LOCK_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        os.utime(out, ns=(times.st_atime_ns, times.st_mtime_ns))


def train_in_run_folder(out: str | Path, inputs: Iterable[str | Path | None], train) -> dict:
    """`train()` (a training command's work, returning its summary) while holding `out`; an
    interrupted run's folder stays marked incomplete: consistent and resumable, not a result."""
    with run_folder(out, inputs=inputs) as folder:
        summary = train()
        if summary["status"] == "interrupted":
            folder.keep_incomplete()
    return summary
