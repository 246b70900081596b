"""Configuration fields as command-line options: one default, one spelling, one set of checks.

Each training or prediction setting lives in a config dataclass (`PretrainConfig`, `FinetuneConfig`,
`FewShotConfig`, `CacheSettings`). The commands read their defaults from those fields
(`config_option(FinetuneConfig, "epochs")`), so a default is written once; the configs' `validate()`
methods check the values and word their errors with `flag(name)`, the option as the command line
spells it (`flag("batch_size") == "--batch-size"`), so library and command-line errors agree.

This module stays light (no torch): command modules import it at start-up.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields

from samadapt.errors import UserError

# Fields whose option is not the field name with dashes.
FLAG_NAMES = {"num_workers": "--workers", "cache_dir": "--cache"}


def flag(name: str) -> str:
    """The command-line spelling of config field `name`: `batch_size` -> `--batch-size`."""
    return FLAG_NAMES.get(name) or "--" + name.replace("_", "-")


def field_of_flag(option: str) -> str:
    """The config field an option sets: `--batch-size` -> `batch_size` (the inverse of `flag`)."""
    for name, spelled in FLAG_NAMES.items():
        if spelled == option:
            return name
    return option.lstrip("-").replace("-", "_")


def default_of(config, name: str):
    """The default of field `name` of the dataclass `config` (class or instance)."""
    for item in fields(config):
        if item.name == name:
            if item.default is not MISSING:
                return item.default
            if item.default_factory is not MISSING:
                return item.default_factory()
            raise TypeError(f"{type(config).__name__ if not isinstance(config, type) else config.__name__}."
                            f"{name} has no default")
    raise AttributeError(f"{config.__name__ if isinstance(config, type) else type(config).__name__} has no field {name!r}")


def config_option(config, name: str, *aliases: str, **kwargs):
    """A `typer.Option` for field `name` of `config`: its default and its spelling come from the field."""
    import typer

    return typer.Option(default_of(config, name), flag(name), *aliases, **kwargs)


def devices_option():
    """`--devices N` of the training commands (see `samadapt.cli.relaunch_on_devices`)."""
    import typer

    return typer.Option(None, "--devices", help="Train on N local processes (GPUs, or CPU processes): "
                                                "re-runs this command under torchrun.")


# ------------------------------------------------------------------------------------------ checks
# Each takes the config and a field name, and raises a one-line UserError naming the option.

def _value(config, name: str):
    return getattr(config, name)


def check_finite(config, name: str) -> float | None:
    value = _value(config, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{flag(name)} {value}: must be a finite number")
    return value


def check_all_finite(config) -> None:
    """Every number of `config` (a dataclass) finite: the first check of each config's `validate()`,
    so that no setting, whichever command sets it, can be NaN or infinite."""
    for item in fields(config):
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            check_finite(config, item.name)


def check_positive(config, name: str) -> None:
    """Finite and > 0 (learning rates); None passes (not set)."""
    value = check_finite(config, name)
    if value is not None and not value > 0:
        raise UserError(f"{flag(name)} {value}: must be > 0")


def check_non_negative(config, name: str) -> None:
    """Finite and >= 0 (weight decay, gradient clipping, intervals); None passes (not set)."""
    value = check_finite(config, name)
    if value is not None and value < 0:
        raise UserError(f"{flag(name)} {value}: must be >= 0")


def check_at_least(config, name: str, low: int = 1) -> None:
    """An integer count of at least `low` (epochs, batch size); None passes (not set)."""
    value = check_finite(config, name)
    if value is not None and value < low:
        raise UserError(f"{flag(name)} {value}: must be at least {low}")


def check_fraction(config, name: str, *, low_open: bool = False, high_open: bool = False) -> None:
    """Finite and in [0, 1] (ends excluded where asked); None passes (not set)."""
    value = check_finite(config, name)
    if value is None:
        return
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        span = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise UserError(f"{flag(name)} {value}: must be in {span}")


def check_choice(config, name: str, choices) -> None:
    value = _value(config, name)
    if value not in choices:
        raise UserError(f"{flag(name)} {value!r}: must be one of {', '.join(map(str, choices))}")
