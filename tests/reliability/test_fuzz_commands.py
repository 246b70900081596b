"""A seeded random campaign of whole commands on mutated inputs: dataset descriptions, splits files
and numeric options. Every run must end in exit 0 with its outputs complete (no incomplete marker),
or in exit 2 with one `samadapt: error:` line, no traceback and the tree unchanged.

Bounded: a fixed number of mutations per kind with fixed seeds, tiny data, and commands that do no
model work (`data check`, and `finetune` / `fewshot train` refused or stopped before training);
`FUZZ_COMMANDS=N` runs N mutations per kind instead.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil

import pytest

from samadapt.engine.run_folder import INCOMPLETE_FILE
from test_bad_inputs import run_cli, tree_state

ROUNDS = int(os.environ.get("FUZZ_COMMANDS", 12))
JUNK = [None, -1, 0, 1.5, float("nan"), "", "x", [], {}, ["P0001-1"], True, 10**9]


def _mutate(value, rng: random.Random):
    """A copy of a JSON-like value with one random change somewhere inside it."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        copy = dict(value)
        choice = rng.random()
        if choice < 0.2:
            del copy[key]
        elif choice < 0.4:
            copy[key] = rng.choice(JUNK)
        else:
            copy[key] = _mutate(value[key], rng)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.8:
        copy = list(value)
        index = rng.randrange(len(copy))
        choice = rng.random()
        if choice < 0.3:
            copy.append(copy[index])  # a duplicate
        elif choice < 0.5:
            del copy[index]
        else:
            copy[index] = _mutate(copy[index], rng)
        return copy
    return rng.choice(JUNK)


def _assert_contract(code: int, err: str, root, before: dict) -> None:
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 0:
        assert not list(root.rglob(INCOMPLETE_FILE)), "a finished command left its folder marked incomplete"
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("samadapt: error: "), (code, err)
    assert tree_state(root) == before, "a refused command changed the tree"


@pytest.fixture()
def world(bad_world, tmp_path, monkeypatch):
    for name in ("fa", "anat2d"):
        shutil.copytree(bad_world / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_mutated_splits_files(world, seed, capsys):
    rng = random.Random(seed)
    splits = json.loads((world / "fa" / "splits.json").read_text())
    (world / "mutated.json").write_text(json.dumps(_mutate(splits, rng)))
    before = tree_state(world)
    # a valid splits file is refused for its --fold, checked once it is read: no training either way
    command = "finetune --data fa --splits mutated.json --out run --model unet --image-size 64 --fold 9"
    code, _, err = run_cli(shlex.split(command), capsys)
    _assert_contract(code, err, world, before)
    assert code == 2


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_mutated_dataset_descriptions(world, seed, capsys):
    import yaml

    rng = random.Random(1000 + seed)
    description = yaml.safe_load((world / "anat2d" / "dataset.yaml").read_text())
    (world / "anat2d" / "dataset.yaml").write_text(yaml.safe_dump(_mutate(description, rng)))
    before = tree_state(world)
    code, _, err = run_cli(["data", "check", "anat2d"], capsys)
    _assert_contract(code, err, world, before)


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_mutated_numeric_options(world, seed, capsys):
    rng = random.Random(2000 + seed)
    option = rng.choice(["--lr", "--weight-decay", "--grad-clip", "--epochs", "--batch-size", "--shots"])
    value = rng.choice(["nan", "inf", "-inf", "-1", "0", "-0.5", "1e309", "abc"])
    before = tree_state(world)
    command = f"fewshot train --data anat2d --cache nowhere --out run {option} {value}"
    code, _, err = run_cli(shlex.split(command), capsys)
    _assert_contract(code, err, world, before)
    assert code == 2
