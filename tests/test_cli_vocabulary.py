"""One vocabulary across the CLI: the same thing has the same option name in every command.

Walks every registered command of the typer app. The splits file is `--splits FILE`, the part of
the splits `--part train|val|test`, the starting weights `--init` (grammar in
`samadapt.modeling.sources`), a trained run to predict or evaluate with `--model`, a dataset `--data`.
"""

from __future__ import annotations

from cli_commands import all_commands  # tests/cli_commands.py

import pytest

from samadapt.errors import UserError
from samadapt.modeling.sources import INIT_DEFAULT, INIT_KINDS, InitSource, parse_init

# Python parameter name -> the one spelling of its option.
SPELLING = {"splits": "--splits", "part": "--part", "init": "--init"}
# Spellings that meant one of those somewhere once, or two things at once: never again.
RETIRED = {"--split", "--weights", "-w", "--support", "--run"}

# Which command takes which of them (a new command that takes one must be listed here).
EXPECTED = {
    "pretrain": {"init"},
    "finetune": {"splits", "init"},
    "ablate-loss": {"splits", "init"},
    "finetune-memory": {"splits", "init"},
    "evaluate": {"splits", "part"},
    "predict": {"init"},
    "propagate": {"init"},
    "fewshot cache": {"init"},
    "fewshot train": {"splits"},
    "fewshot evaluate": {"splits", "part"},
    "fewshot baseline": {"splits", "part", "init"},
    "baseline nnunet": {"splits", "part"},
    "studio": {"init"},
}


COMMANDS = all_commands()


def _options(command):
    return [p for p in command.params if p.param_type_name == "option"]


def _role(param) -> str | None:
    """What an option means, from its name, its spellings and its help."""
    spellings = set(param.opts) | set(param.secondary_opts)
    if param.name in SPELLING:
        return param.name
    if "splits.json" in (param.help or ""):
        return "splits"
    if spellings & RETIRED:
        return "retired"
    return None


def test_the_walk_sees_every_command_and_the_table_names_only_real_ones():
    assert {"predict", "finetune", "fewshot cache", "fewshot predict", "data split"} <= set(COMMANDS)
    assert set(EXPECTED) <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_splits_part_and_weights_are_spelled_the_same_everywhere(name):
    roles = set()
    for param in _options(COMMANDS[name]):
        role = _role(param)
        spellings = [*param.opts, *param.secondary_opts]
        assert role != "retired", f"{name}: {spellings} is a retired spelling"
        if role is None:
            continue
        assert spellings == [SPELLING[role]], f"{name}: {param.name} is spelled {spellings}, not {SPELLING[role]}"
        assert param.name == role, f"{name}: {SPELLING[role]} is stored as {param.name!r}"
        roles.add(role)
    assert roles == EXPECTED.get(name, set()), f"{name} takes {sorted(roles)}; update EXPECTED if that is intended"


@pytest.mark.parametrize("name", sorted(n for n, roles in EXPECTED.items() if "init" in roles))
def test_every_init_option_starts_from_random_and_states_the_grammar(name):
    (param,) = [p for p in _options(COMMANDS[name]) if p.name == "init"]
    assert param.default == INIT_DEFAULT
    assert param.help.startswith("Starting weights: random, sam2:PATH")


@pytest.mark.parametrize("name", ["predict", "fewshot predict", "fewshot evaluate", "evaluate"])
def test_a_trained_run_is_given_with_model(name):
    (param,) = [p for p in _options(COMMANDS[name]) if p.name == "model"]
    assert param.opts[0] == "--model"


@pytest.mark.parametrize("text, accepts, expected", [
    ("random", INIT_KINDS, InitSource("random")),
    (" random ", INIT_KINDS, InitSource("random")),
    ("sam2:weights/sam2.1_hiera_tiny.pt", INIT_KINDS, "sam2:weights/sam2.1_hiera_tiny.pt"),
    ("mae:runs/mae", INIT_KINDS, "mae:runs/mae"),
    ("ckpt:runs/ft", ("random", "ckpt"), "ckpt:runs/ft"),
    ("sam2:C:/weights/x.pt", INIT_KINDS, "sam2:C:/weights/x.pt"),  # only the first colon separates
])
def test_parse_init_reads_the_grammar(text, accepts, expected):
    source = parse_init(text, accepts)
    assert source == expected if isinstance(expected, InitSource) else str(source) == expected


@pytest.mark.parametrize("text, accepts, fragment", [
    ("weights.pt", INIT_KINDS, "--init 'weights.pt': use random, sam2:PATH, hf:ORG/NAME[@REVISION], mae:RUN_DIR or ckpt:DIR "
                               "(for a weights file or folder: sam2:weights.pt)"),
    ("imagenet", INIT_KINDS, "use random, sam2:PATH"),
    ("sam2:", INIT_KINDS, "--init 'sam2:'"),
    ("random:x", INIT_KINDS, "--init 'random:x'"),
    ("", INIT_KINDS, "--init ''"),
    ("mae:runs/mae", ("random", "sam2", "ckpt"), "--init mae:runs/mae: predict takes random, sam2:PATH or ckpt:DIR"),
])
def test_parse_init_refuses_in_one_line(text, accepts, fragment):
    with pytest.raises(UserError) as error:
        parse_init(text, accepts, command="predict")
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_help_shows_no_type_for_flags(capsys):
    from samadapt.cli import main

    for argv in (["--help"], ["predict", "--help"], ["finetune", "--help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "<bool>" not in out and "--help" in out
    assert main(["--help"]) == 0
    assert "--debug" in capsys.readouterr().out
