"""The one exception type for problems the user can fix (bad file, bad value, wrong checkpoint).

The CLI prints a `UserError` as a single line and exits with code 2; anything else is a bug and is
reported as an internal error (traceback only with `--debug`).
"""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input. The message must name the offending file or value."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        if self.path is not None and str(self.path) not in message:
            message = f"{self.path}: {message}"
        # One line, always: multi-line messages would break the CLI contract.
        super().__init__(" ".join(message.split()))


def warn(message: str) -> None:
    """One line on stderr for what the user must know but that does not stop the command (a number
    that may mislead, a silent default): stdout stays the command's result."""
    print(f"samadapt: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def require_module(module: str, extra: str, purpose: str):
    """Import an optional dependency, or say in one line which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the {module} package: pip install 'samadapt[{extra}]'") from None
