#!/usr/bin/env bash
# Download, on a machine with network, the wheels a GPU machine with torch but no network needs to
# install samadapt: `bash benchmarks/gpu_wheels.sh [DEST]` (default DEST: gpu_wheels/, git-ignored).
# Then, on the GPU machine: `bash benchmarks/gpu_check.sh` (installs from DEST, runs the check).
#
# What is fetched: samadapt's dependencies other than torch, with their own dependencies, at the
# versions installed in this machine's environment (the ones the tests pass with), as binary wheels
# for the GPU machine's Python (GPU_PYTHON, default 3.12) on manylinux x86-64, plus setuptools and
# wheel for building samadapt there. torch and what torch itself needs are never fetched (the GPU
# machine has them). The large packages that GPU images ship already (numpy, scipy, matplotlib,
# transformers, tensorboard, pillow) are left out unless GPU_WHEELS_ALL=1: the whole set is over
# 100 MiB. The check installs only what is missing or too old there, and names anything it still lacks.
#
# Environment: PYTHON (the interpreter whose installed versions are pinned; default .venv/bin/python),
# GPU_PYTHON (target Python version), GPU_WHEELS_ALL=1 (all of them), GPU_WHEELS_EXTRA (more
# requirement specifiers, e.g. "typer==0.29.2").
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-gpu_wheels}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
GPU_PYTHON=${GPU_PYTHON:-3.12}

pins=$("$PY" - "$GPU_PYTHON" "${GPU_WHEELS_ALL:-0}" <<'EOF'
import importlib.metadata as md
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

target, everything = sys.argv[1], sys.argv[2] == "1"
env = {"python_version": target, "python_full_version": target + ".0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
heavy = set() if everything else {"numpy", "scipy", "matplotlib", "transformers", "tensorboard", "pillow"}


def needs(name):
    out = []
    for text in md.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(env):
            out.append(canon(requirement.name))
    return out


def closure(roots, stop=frozenset()):
    seen, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        stack += needs(name)
    return seen


direct = [canon(Requirement(t).name) for t in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]]
torch_side = closure(["torch"])
wanted = closure([d for d in direct if d != "torch"], stop=frozenset(heavy | torch_side))
for name in sorted(wanted):
    print(f"{name}=={md.version(name)}")
setuptools = md.version("setuptools") if "setuptools" in {canon(d.metadata["Name"]) for d in md.distributions()} else "0"
print(f"setuptools=={setuptools}" if int(setuptools.split(".")[0]) >= 77 else "setuptools>=77")
print("wheel")
EOF
)
# shellcheck disable=SC2206
pins=($pins ${GPU_WHEELS_EXTRA:-})
platforms=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
           manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
    --implementation cp "${platforms[@]}" -d "$DEST" "${pins[@]}"
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1), in $DEST for Python $GPU_PYTHON:"
ls "$DEST" | sed 's/^/  /'
