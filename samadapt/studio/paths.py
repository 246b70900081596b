"""Confinement of every file the studio reads or writes to the folder it was started on.

Requests never carry file paths to read: cases are addressed by the ids of the listing, and the
only names a request gives are upload file names and asset names. Those go through `confined`,
which refuses absolute paths, `..` or `.` parts (any hidden name), empty parts, names that decode to either (a percent-encoded
`%2e%2e%2f`, decoded once by the web framework and again here), hidden names, and anything whose
resolved location (symlinks followed) lies outside the root.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from samadapt.errors import UserError


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symlink resolved, is `root` or lies under it."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def confined(root: Path, name: str) -> Path:
    """`root / name` for a relative `name` that stays inside `root`; `UserError` otherwise."""
    text = str(name)
    decoded = text
    for _ in range(3):  # %252e%252e decodes to %2e%2e, then to ..
        decoded = unquote(decoded)
    if not text or "\x00" in decoded or "\\" in decoded:
        raise UserError(f"path {text!r} is not allowed")
    parts = decoded.split("/")
    if decoded.startswith("/") or any(not p or p.startswith(".") for p in parts):
        raise UserError(f"path {text!r} is not allowed (absolute, '..' or hidden)")
    if text != decoded:
        raise UserError(f"path {text!r} is not allowed (encoded characters)")
    target = root / Path(*parts)
    if not is_inside(target, root):
        raise UserError(f"path {text!r} leads outside the studio folder")
    return target
