"""Write outputs so that a failure never leaves a half-written file or folder behind.

Files are written to a temporary sibling and renamed (rename is atomic on POSIX within one
filesystem); output folders are built in a hidden staging folder and moved into place at the end.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from samadapt.errors import UserError


# Write failures the user can fix (free space, quota, a read-only mount): reported in one line
# naming the output, not as an internal error.
_USER_FIXABLE_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _user_fixable(exc: OSError, path: Path) -> UserError | None:
    if exc.errno in _USER_FIXABLE_WRITE_ERRORS:
        return UserError(f"cannot write output ({exc.strerror or os.strerror(exc.errno)})", path)
    return None


def current_umask() -> int:
    """The process's umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_writable_dir(path: str | Path) -> Path:
    """Create `path` (and parents) or raise a `UserError` naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError("output folder path exists and is not a folder", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder ({exc.strerror})", path) from None
    if not os.access(path, os.W_OK):
        raise UserError("output folder is not writable", path)
    return path


def check_output_dir(path: str | Path) -> Path:
    """Raise a `UserError` unless folder `path` exists or could be created; creates nothing.

    For commands that create their output folder only once work starts: a bad location then fails
    before any work, and a failed check leaves nothing behind.
    """
    path = Path(path)
    probe = path
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError("output folder path exists and is not a folder" if probe == path else
                        f"cannot create output folder: {probe} is not a folder", path)
    if not os.access(probe, os.W_OK):
        raise UserError("output folder is not writable", path)
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    # Renaming over a folder fails and over a device (/dev/null, /dev/full) or FIFO would replace it.
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise UserError("output path exists and is not a regular file", path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs follow the user's umask
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and (error := _user_fixable(exc, path)) is not None:
            raise error from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_dir(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging folder; on success its files are moved into `final`, on error it is deleted.

    Files already in `final` that the staging folder does not contain are left alone, so a run can
    write into an existing output folder without wiping unrelated files.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():  # checked before any work is done in the stage
        raise UserError("output folder path exists and is not a folder", final)
    ensure_writable_dir(final.parent if final.parent != Path("") else Path("."))
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    try:
        try:
            yield stage
        except OSError as exc:
            if (error := _user_fixable(exc, final)) is not None:
                raise error from None
            raise
        final.mkdir(parents=True, exist_ok=True)
        for item in sorted(stage.rglob("*")):
            target = final / item.relative_to(stage)
            if item.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif target.exists() and not overwrite:
                raise UserError("output file exists already (use a new output folder)", target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
