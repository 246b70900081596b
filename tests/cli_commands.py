"""Every leaf command of the `samadapt` app by its full name ("fewshot train"), for tests that
check all commands at once."""

from __future__ import annotations

import typer

from samadapt.cli import build_app


def _walk(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _walk(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def all_commands() -> dict:
    return dict(_walk(typer.main.get_command(build_app())))
