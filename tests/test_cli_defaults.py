"""Each default is written once: a command's option that sets a config field has that field's default.

Walks the typer app's click parameters; an option belongs to a config field when it is spelled as
`samadapt.options.flag(field)`.
"""

from __future__ import annotations

from cli_commands import all_commands  # tests/cli_commands.py

import math
from dataclasses import fields

import pytest

from samadapt.errors import UserError
from samadapt.fewshot.config import CacheSettings, FewShotConfig, PropagationSeeds
from samadapt.finetune.config import FinetuneConfig
from samadapt.inference.config import PropagateConfig
from samadapt.options import default_of, field_of_flag, flag
from samadapt.pretrain.config import PretrainConfig


COMMANDS = all_commands()

# command, the config its options fill, and fields it must offer as options
PAIRS = [
    ("pretrain", PretrainConfig, {"epochs", "batch_size", "lr", "grad_clip", "warmup_epochs", "num_workers", "init"}),
    ("finetune", FinetuneConfig, {"epochs", "batch_size", "lr", "grad_clip", "keep", "num_workers", "presence", "init"}),
    ("ablate-loss", FinetuneConfig, {"epochs", "batch_size", "lr", "keep", "repeat", "init"}),
    ("fewshot train", FewShotConfig, {"shots", "epochs", "lr", "grad_clip", "batch_size", "loss"}),
    ("fewshot cache", CacheSettings, {"model", "init", "image_size", "batch_size"}),
    ("fewshot baseline", CacheSettings, {"model", "init", "image_size"}),
    ("fewshot predict", CacheSettings, {"batch_size"}),
    ("fewshot predict", PropagationSeeds, {"seed_slices", "seed_count"}),
    ("fewshot evaluate", PropagationSeeds, {"seed_slices", "seed_count"}),
    ("propagate", PropagateConfig, {"init", "image_size", "stop_when_absent"}),
]
# options spelled like a field of the command's config that mean something else there
OTHER_MEANING = {"fewshot predict": {"model"}}  # the few-shot run folder, not a model name


def _options(command) -> dict[str, object]:
    """Every spelling of every option of `command` -> its click parameter."""
    return {spelling: p for p in command.params if p.param_type_name == "option"
            for spelling in (*p.opts, *p.secondary_opts)}


def test_the_table_names_real_commands():
    assert {name for name, _, _ in PAIRS} <= set(COMMANDS)


@pytest.mark.parametrize("command, config, required", PAIRS, ids=[name for name, _, _ in PAIRS])
def test_every_option_that_sets_a_field_has_the_fields_default(command, config, required):
    options = _options(COMMANDS[command])
    matched = {}
    for item in fields(config):
        param = options.get(flag(item.name))
        if param is None or item.name in ("data", "out", "splits", *OTHER_MEANING.get(command, ())):
            continue
        expected = default_of(config, item.name)
        assert param.default == expected, (f"{command} {flag(item.name)} defaults to {param.default!r}, "
                                           f"{config.__name__}.{item.name} to {expected!r}")
        matched[item.name] = param
    missing = required - set(matched)
    assert not missing, f"{command} offers no option for {sorted(missing)}"


def test_fewshot_shots_default_is_the_documented_five():
    assert default_of(FewShotConfig, "shots") == 5
    assert _options(COMMANDS["fewshot train"])["--shots"].default == 5


@pytest.mark.parametrize("name, spelled", [("batch_size", "--batch-size"), ("lr", "--lr"),
                                           ("num_workers", "--workers"), ("cache_dir", "--cache"),
                                           ("grad_clip", "--grad-clip")])
def test_flag_spells_a_field_as_the_command_line_does(name, spelled):
    assert flag(name) == spelled
    assert field_of_flag(spelled) == name


def test_default_of_reads_factories_and_refuses_fields_without_one():
    assert default_of(PretrainConfig, "command").startswith("samadapt")
    with pytest.raises(TypeError):
        default_of(PretrainConfig, "data")
    with pytest.raises(AttributeError):
        default_of(PretrainConfig, "no_such_field")


BAD_VALUES = [
    # (config built with this one bad value, the one error line's fragment)
    (lambda: PretrainConfig(data=["x"], out="o", lr=math.nan), "--lr nan: must be a finite number"),
    (lambda: PretrainConfig(data=["x"], out="o", grad_clip=-1.0), "--grad-clip -1.0: must be >= 0"),
    (lambda: PretrainConfig(data=["x"], out="o", epochs=0), "--epochs 0: must be at least 1"),
    (lambda: PretrainConfig(data=["x"], out="o", num_workers=-2), "--workers -2: must be at least 0"),
    (lambda: FinetuneConfig(data="d", splits="s", out="o", lr=math.inf), "--lr inf: must be a finite number"),
    (lambda: FinetuneConfig(data="d", splits="s", out="o", encoder_lr=0.0), "--encoder-lr 0.0: must be > 0"),
    (lambda: FinetuneConfig(data="d", splits="s", out="o", keep="first"), "--keep 'first': must be one of best, last"),
    (lambda: FinetuneConfig(data="d", splits="s", out="o", patience=0), "--patience 0: must be at least 1"),
    (lambda: FinetuneConfig(data="d", splits="s", out="o", warmup_fraction=1.0), "--warmup-fraction 1.0: must be in [0, 1)"),
    (lambda: FewShotConfig(lr=-1e-3), "--lr -0.001: must be > 0"),
    (lambda: FewShotConfig(grad_clip=math.nan), "--grad-clip nan: must be a finite number"),
    (lambda: FewShotConfig(background_prototypes=0), "--background-prototypes 0: must be at least 1"),
    (lambda: CacheSettings(batch_size=0), "--batch-size 0: must be at least 1"),
    (lambda: PropagationSeeds(seed_slices="all"), "--seed-slices 'all': must be one of confident, support"),
    (lambda: PropagationSeeds(seed_count=0), "--seed-count 0: must be at least 1"),
]


@pytest.mark.parametrize("build, fragment", BAD_VALUES, ids=[fragment for _, fragment in BAD_VALUES])
def test_validate_refuses_a_bad_value_naming_the_option(build, fragment):
    with pytest.raises(UserError) as error:
        build().validate()
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("config", [PretrainConfig(data=["x"], out="o"), FinetuneConfig(data="d", splits="s", out="o"),
                                    FewShotConfig(), CacheSettings(), PropagationSeeds()], ids=lambda c: type(c).__name__)
def test_the_defaults_pass_validation(config):
    config.validate()
