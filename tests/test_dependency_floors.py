"""The lowest versions pyproject.toml allows must have every API the code calls.

Each entry names a package, the first release with an API the code uses, and where the code uses it
(the snippet must still be there, so an entry is removed once the code stops needing it). Raising a
floor means adding its reason here; lowering one below an entry fails.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

# package -> (first version with the API, file using it, snippet of the use)
NEEDED = {
    "scipy": ("1.15", "samadapt/evaluate/compare.py", "rng=np.random.default_rng"),  # bootstrap(rng=)
    "transformers": ("4.56", "samadapt/modeling/registry.py", "from transformers import Sam2Model"),
    "torch": ("2.3", "samadapt/engine/trainer.py", "torch.amp.GradScaler(self.device.type"),
}


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {(r := Requirement(text)).name.lower(): r for text in project["dependencies"]}


def floor(requirement: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(bounds) if bounds else None


@pytest.mark.parametrize("package", sorted(NEEDED))
def test_declared_floor_has_the_apis_the_code_uses(package):
    needed, file, snippet = NEEDED[package]
    assert snippet in (ROOT / file).read_text(), f"{file} no longer uses {snippet!r}: update NEEDED"
    requirement = declared()[package]
    lowest = floor(requirement)
    assert lowest is not None and lowest >= Version(needed), (
        f"pyproject allows {requirement}, but {file} needs {package} >= {needed}")


@pytest.mark.parametrize("package", sorted(NEEDED))
def test_installed_version_satisfies_the_declared_range(package):
    installed = Version(version(package))
    assert installed in declared()[package].specifier
    assert installed >= Version(NEEDED[package][0])
