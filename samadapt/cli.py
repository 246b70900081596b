"""The `samadapt` command line.

Each pipeline stage registers its own commands (a `register(app)` function in
`samadapt/<stage>/commands.py`); heavy imports (torch, transformers) happen inside the command
functions so `samadapt --help` stays fast.

Error contract: a `UserError` (bad file, bad value) prints one line `samadapt: error: ...` and exits
with code 2; a usage error from the parser does the same; any other exception is a bug, printed as
one line with exit code 1. `--debug` anywhere on the command line shows the full traceback instead.
"""

from __future__ import annotations

import errno
import functools
import importlib
import os
import sys

import typer

from samadapt.errors import EXIT_USER_ERROR, UserError

COMMAND_MODULES = (
    "samadapt.modeling.commands",
    "samadapt.inference.commands",
    "samadapt.demo.commands",
    "samadapt.data.commands",
    "samadapt.evaluate.commands",
    "samadapt.pretrain.commands",
    "samadapt.finetune.commands",
    "samadapt.fewshot.commands",
    "samadapt.baselines.commands",
    "samadapt.export.commands",
    "samadapt.studio.commands",
)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="samadapt",
        help="Adapt Segment Anything (SAM2, SAM) to medical images with few labels. "
             "Add --debug anywhere on a command line to see the full traceback of an error.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback(invoke_without_command=True)
    def _root(
        version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    ) -> None:
        """Adapt Segment Anything (SAM2, SAM) to medical images with few labels.

        Add --debug anywhere to see full tracebacks.
        """
        if version:
            from samadapt import __version__

            print(__version__)
            raise typer.Exit(0)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            # No stage is optional: one that cannot be imported is a broken installation, and
            # skipping it would make its commands vanish without a word.
            raise ImportError(f"command module {name} cannot be imported ({type(exc).__name__}: {exc}); "
                              "the installation is incomplete: reinstall samadapt") from exc
        module.register(app)
    return app


# The arguments of the command being run, for `--devices N` to re-run it under torchrun.
_INVOKED_ARGS: list[str] = []


def invoked_args() -> list[str]:
    """The arguments of the command being run, as given (e.g. to suggest it again with `--resume`)."""
    return list(_INVOKED_ARGS or sys.argv[1:])


def _without_devices(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--devices":
            skip = True
        elif not arg.startswith("--devices="):
            out.append(arg)
    return out


def relaunch_on_devices(devices: int | None) -> int | None:
    """`--devices N` of the training commands: the exit code of this same command re-run under
    torchrun on N local processes, or None when it should simply run here (no flag, or N = 1)."""
    if devices is None:
        return None
    from samadapt.engine.distributed import launch_torchrun, launched_by_torchrun

    if devices < 1:
        raise UserError(f"--devices must be at least 1, got {devices}")
    if devices == 1 and not launched_by_torchrun():
        return None
    return launch_torchrun(_without_devices(_INVOKED_ARGS or sys.argv[1:]), devices)


def _quiet_flag_types(command) -> None:
    """Flags take no value, yet the help lists `<bool>` as their type: show no type for them."""
    options = list(command.params)
    help_option = command.get_help_option(command.context_class(command))  # built once, then cached
    for param in options + ([help_option] if help_option is not None else []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _quiet_flag_types(sub)


class CommandInterrupted(Exception):
    """Ctrl-C (or a command's own KeyboardInterrupt) inside a command, carried past typer, which would
    turn a KeyboardInterrupt into a silent exit 130."""


def _carry_interrupts(command) -> None:
    """Wrap every command's callback so a KeyboardInterrupt leaves it as `CommandInterrupted`."""
    callback = getattr(command, "callback", None)
    if callback is not None:
        @functools.wraps(callback)
        def carried(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except KeyboardInterrupt as exc:
                raise CommandInterrupted() from exc

        command.callback = carried
    for sub in getattr(command, "commands", {}).values():
        _carry_interrupts(sub)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _fail(message: str, code: int) -> int:
    print(f"samadapt: error: {_one_line(message)}", file=sys.stderr)
    return code


def _fail_on_every_rank(message: str, code: int) -> int:
    """`_fail` for bad input, which every torchrun worker sees alike: said once, not once per rank."""
    if os.environ.get("LOCAL_RANK") is None:
        return _fail(message, code)
    from samadapt.engine.launch import record_worker_error

    if record_worker_error(_one_line(message)):
        return code  # `--devices N`: the launcher prints the lowest rank's message
    return _fail(message, code) if os.environ.get("RANK", "0") == "0" else code  # plain torchrun


def _leave_process_group() -> None:
    # A process group left for the interpreter to tear down makes torch warn at exit (and NCCL can
    # hang). None can exist unless torch.distributed was imported; checking first keeps commands
    # that never touch torch from importing it here.
    if "torch.distributed" in sys.modules:
        from samadapt.engine.distributed import shutdown_distributed

        shutdown_distributed()


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    finally:  # under torchrun, whatever the command's outcome
        _leave_process_group()


def _run(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _INVOKED_ARGS[:] = args
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        command = typer.main.get_command(build_app())
    except ImportError as exc:
        if debug:
            raise
        return _fail(f"internal error: {exc} (rerun with --debug for the traceback)", 1)
    _quiet_flag_types(command)
    _carry_interrupts(command)
    try:
        result = command.main(args=args, prog_name="samadapt", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        return _fail_on_every_rank(str(exc), exc.exit_code)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except CommandInterrupted:
        return _fail("interrupted", 130)
    except typer.Abort:
        return _fail("aborted", 130)
    except typer.TyperException as exc:
        # Parser errors (unknown option, bad value type, missing argument, no command given).
        if debug:
            raise
        code = getattr(exc, "exit_code", EXIT_USER_ERROR)
        if type(exc).__name__ == "NoArgsIsHelpError":
            command.main(args=["--help"], prog_name="samadapt", standalone_mode=False)
            return 0
        return _fail(exc.format_message(), code if code else EXIT_USER_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # a bug, not bad input: one line unless --debug
        if debug:
            raise
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # the disk, not the program: say where, so the user can free space or choose another --out
            where = f" writing {exc.filename}" if exc.filename else ""
            return _fail(f"no space left on the device{where}; free some space or write elsewhere", EXIT_USER_ERROR)
        if isinstance(exc, PermissionError) and exc.filename:
            # a file or folder the user may not read or write: theirs to fix, wherever it was opened
            return _fail(f"{exc.filename}: permission denied ({exc.strerror or 'not allowed'})", EXIT_USER_ERROR)
        return _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
