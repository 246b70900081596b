#!/usr/bin/env bash
# The GPU readiness check as one command, on a machine with one CUDA GPU, torch installed and no
# network, from the repository root:
#
#     bash benchmarks/gpu_check.sh
#
# It installs samadapt from this working tree (pip -e, no dependencies) and, from the wheels in
# gpu_wheels/ (made beforehand by benchmarks/gpu_wheels.sh on a machine with network), whatever of
# its dependencies is missing there, then runs every stage of benchmarks/gpu_check.py on the GPU
# (within 8 minutes). The report goes to $OUT/gpu_check.json and the output to $OUT/gpu_check.log
# when OUT is set, else to benchmarks/results/gpu_check.json. Exit code 0 only if every stage passed.
#
# Environment: PYTHON (default python3), WHEELS (default gpu_wheels), WORK (scratch folder, default
# /tmp/samadapt-gpu-check). Further arguments go to gpu_check.py (e.g. --only parity, --budget 300).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
args=(--device cuda --wheels "${WHEELS:-gpu_wheels}" --work "${WORK:-/tmp/samadapt-gpu-check}")
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    PYTHONUNBUFFERED=1 "$PY" -m benchmarks.gpu_check "${args[@]}" --json "$OUT/gpu_check.json" "$@" 2>&1 \
        | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
exec "$PY" -m benchmarks.gpu_check "${args[@]}" "$@"
