"""The CLI's error contract: bad input is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

from samadapt.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "predict" in out and "models" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip()


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samadapt: error:")


def test_a_stage_that_cannot_be_imported_is_never_skipped_silently(capsys, monkeypatch):
    from samadapt import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "samadapt.no_such_stage.commands"))
    assert main(["--help"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "samadapt.no_such_stage.commands cannot be imported" in err[0]


def test_every_command_is_a_module_level_function_of_its_stages_commands_module():
    from samadapt import cli

    def callbacks(app):
        for info in app.registered_commands:
            yield info.callback
        for group in app.registered_groups:
            yield from callbacks(group.typer_instance)

    app = cli.build_app()
    found = list(callbacks(app))
    assert len(found) > 10
    assert all(name.endswith(".commands") for name in cli.COMMAND_MODULES)
    for callback in found:
        # one registration style: `register(app)` adds functions defined at module level
        assert callback.__module__ in cli.COMMAND_MODULES, callback
        assert callback.__qualname__ == callback.__name__, callback


def test_a_command_leaves_the_process_group_when_it_ends(capsys):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert main(["--version"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_module_entry_point_runs_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "samadapt", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    from samadapt.data import phantoms

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "p" / "images"))

    monkeypatch.setattr(phantoms, "generate_phantoms", full_disk)
    assert main(["phantom", "--n", "2", "--size", "40", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and "images" in err[0]


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(monkeypatch, capsys):
    """typer turns KeyboardInterrupt into a silent exit 130; the CLI still says what happened."""
    import samadapt.modeling.registry as registry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "list_models", interrupted)
    from samadapt.cli import main

    assert main(["models"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["samadapt: error: interrupted"] and "Traceback" not in err
