#!/usr/bin/env bash
# Few-shot k-shot sweep: Dice against the number of labelled shots, with an encoder pre-trained by
# MAE on the dataset's own training images and, as the floor, the same encoder with random weights.
#
# One patient-level split (test part held out). MAE sees only the pixels of the training part (no
# labels, never the test images). For every encoder, k in SHOTS and seed in SEEDS: pick k shots
# from the training part (by seed), train the decoder on the cached features, score the test part.
#
#   bash benchmarks/fewshot_sweep.sh                                        # JSRT, 256 px
#   NAME=hippocampus DATA_ROOT=../shared/data/hippocampus SIZE=128 bash benchmarks/fewshot_sweep.sh
#
# Writes $OUT/sweep.csv (one row per encoder, k, seed, class), $OUT/sweep.md and $OUT/dice_vs_shots.png.
# Needs `samadapt` on PATH.
set -euo pipefail
NAME=${NAME:-jsrt}
DATA_ROOT=${DATA_ROOT:-../shared/data/jsrt}
OUT=${OUT:-runs/fewshot_sweep/$NAME}
SIZE=${SIZE:-256}
SHOTS=${SHOTS:-1 3 5 10}
SEEDS=${SEEDS:-0 1 2}
EPOCHS=${EPOCHS:-100}
MAE_EPOCHS=${MAE_EPOCHS:-30}
MAE_BATCH=${MAE_BATCH:-8}
TEST_FRACTION=${TEST_FRACTION:-0.3}
THREADS=${THREADS:-2}
EXTRA_EVAL=${EXTRA_EVAL:-}     # e.g. --largest-component for 3D
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS

[ -f "$OUT/dataset.yaml" ] || samadapt data init "$DATA_ROOT" --out "$OUT/dataset.yaml"
[ -f "$OUT/splits.json" ] || samadapt data split "$OUT/dataset.yaml" --folds 1 --seed 0 --test-fraction "$TEST_FRACTION" \
  --out "$OUT/splits.json"

# MAE input: links to the training part's images only (train + validation of fold 0).
if [ ! -d "$OUT/mae/encoder" ]; then
  python - "$OUT/dataset.yaml" "$OUT/splits.json" "$OUT/mae_images" <<'PY'
import json, os, sys
from pathlib import Path
from samadapt.data.dataset import load_dataset
dataset, splits, folder = load_dataset(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
fold = splits["splits"][0]
keep = set(fold["train"]["cases"]) | set(fold["val"]["cases"])
folder.mkdir(parents=True, exist_ok=True)
for case in dataset.cases:
    if case.id in keep:
        target = folder / Path(case.image).name
        if not target.exists():
            os.symlink(Path(case.image).resolve(), target)
print(f"MAE input: {len(list(folder.iterdir()))} training images (test part excluded)")
PY
  samadapt pretrain --data "$OUT/mae_images" --model sam2-hiera-tiny --image-size "$SIZE" --init random \
    --mask-ratio 0.75 --path sparse --epochs "$MAE_EPOCHS" --warmup-epochs 3 --batch-size "$MAE_BATCH" --seed 0 \
    --recon-every 10 --threads "$THREADS" --out "$OUT/mae"
fi

for encoder in random mae; do
  init=random
  [ "$encoder" = mae ] && init="mae:$OUT/mae"
  samadapt fewshot cache --model sam2-hiera-tiny --init "$init" --image-size "$SIZE" --data "$OUT/dataset.yaml" \
    --out "$OUT/cache_$encoder"
  for k in $SHOTS; do
    for seed in $SEEDS; do
      run="$OUT/$encoder/k${k}_s${seed}"
      [ -f "$run/eval/summary.json" ] && continue
      samadapt fewshot train --data "$OUT/dataset.yaml" --splits "$OUT/splits.json" --shots "$k" --seed "$seed" \
        --cache "$OUT/cache_$encoder" --epochs "$EPOCHS" --lr 1e-3 --loss dice+bce --out "$run"
      samadapt fewshot evaluate --model "$run" --data "$OUT/dataset.yaml" --splits "$OUT/splits.json" --part test \
        --out "$run/eval" $EXTRA_EVAL
    done
  done
done

python -m benchmarks.fewshot_sweep_report "$OUT"
