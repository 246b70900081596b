#!/usr/bin/env bash
# FFA benchmark: MAE-SAM2 vs SAM2 (random init) vs U-Net, patient-level k-fold cross-validation.
#
# Every model gets the same split, loss, augmentation, image size and epoch budget; the model kept
# is the one at the end of the budget (--keep last), so each held-out fold is scored but never used
# for selection. Each case is predicted once, by the model of the fold that did not train on it.
#
#   bash benchmarks/ffa_cv.sh                       # defaults below
#   EPOCHS=30 SIZE=512 bash benchmarks/ffa_cv.sh    # a bigger budget
#   TRAIN=decoder SAM_LR=1e-3 bash benchmarks/ffa_cv.sh   # frozen encoders: compares the features only
#
#   SEED=1 OUT=runs/ffa_cv_s1 MAE_RUN=runs/ffa_cv/mae bash benchmarks/ffa_cv.sh   # another fine-tuning seed
#
#   LABELED=../shared/data/drive/training OUT=runs/drive_cv SIZE=512 MODELS="unet sam2_random" \
#     TRAIN=decoder SAM_LR=1e-3 bash benchmarks/ffa_cv.sh    # the same harness on DRIVE vessels
#
# Needs ../shared/data/ffa (labelled and unlabeled) and a `samadapt` on PATH.
set -euo pipefail
DATA_ROOT=${DATA_ROOT:-../shared/data/ffa}
LABELED=${LABELED:-$DATA_ROOT/labeled}
UNLABELED=${UNLABELED:-$DATA_ROOT/unlabeled}
OUT=${OUT:-runs/ffa_cv}
SIZE=${SIZE:-256}
EPOCHS=${EPOCHS:-20}
FOLDS=${FOLDS:-3}
BATCH=${BATCH:-2}
LOSS=${LOSS:-0.9*dice+0.1*bce}
MAE_RUN=${MAE_RUN:-$OUT/mae}
MAE_EPOCHS=${MAE_EPOCHS:-40}
MAE_SIZE=${MAE_SIZE:-$SIZE}   # pre-training may run below the fine-tuning size (position embeddings interpolate)
TRAIN_FRAMES=${TRAIN_FRAMES:-all}   # a number: each fold trains on that many of its training frames (label efficiency)
THREADS=${THREADS:-2}
SEED=${SEED:-0}   # fine-tuning seed; the folds (data split) and the MAE run stay those of seed 0
TRAIN=${TRAIN:-all}        # what trains in the SAM2 models: all, encoder-decoder or decoder
SAM_LR=${SAM_LR:-1e-4}
DECODER_LR=${DECODER_LR:-1e-3}   # mae_sam2_decoder: only the decoder and class prompts train
LORA_LR=${LORA_LR:-5e-4}         # mae_sam2_lora: LoRA adapters on the trunk, decoder and prompts
LORA_RANK=${LORA_RANK:-8}
NNUNET_EPOCHS=${NNUNET_EPOCHS:-10}           # nnunet: nnU-Net v2's 2d plan, a short CPU budget
NNUNET_ITERATIONS=${NNUNET_ITERATIONS:-25}
# A subset trains only those (runs already done are kept). Also available: mae_sam2_decoder and
# mae_sam2_lora, the MAE encoder fine-tuned with --train decoder / --train lora, and nnunet
# (`samadapt baseline nnunet`, the nnunet extra).
MODELS=${MODELS:-unet sam2_random mae_sam2}
mkdir -p "$OUT"

samadapt data init "$LABELED" --out "$OUT/dataset.yaml"
samadapt data split "$OUT/dataset.yaml" --folds "$FOLDS" --seed 0 --test-fraction 0 --out "$OUT/splits.json"
if [ "$TRAIN_FRAMES" != all ]; then
  # Keep the first N training frames of each fold in a seeded order; the held-out fold is unchanged,
  # so every N is scored on the same frames.
  python - "$OUT/splits.json" "$TRAIN_FRAMES" <<'PY'
import json, random, sys
path, n = sys.argv[1], int(sys.argv[2])
splits = json.load(open(path))
for fold in splits["splits"]:
    cases = sorted(fold["train"]["cases"])
    random.Random(fold["fold"]).shuffle(cases)
    fold["train"]["cases"] = sorted(cases[:n])
    fold["train"]["patients"] = sorted({c.split("-")[0] for c in fold["train"]["cases"]})
json.dump(splits, open(path, "w"), indent=2)
PY
fi

# MAE pre-training of the encoder on the unlabeled frames only (the labelled frames stay unseen).
if [[ " $MODELS " == *" mae_sam2 "* && ! -d "$MAE_RUN/encoder" ]]; then
  samadapt pretrain --data "$UNLABELED" --model sam2-hiera-tiny --image-size "$MAE_SIZE" --init random \
    --mask-ratio 0.75 --path sparse --epochs "$MAE_EPOCHS" --warmup-epochs 4 --batch-size 8 --seed 0 \
    --recon-every 10 --threads "$THREADS" --out "$MAE_RUN"
fi

train() {  # name fold extra-args...
  local name=$1 fold=$2; shift 2
  [[ " $MODELS " == *" $name "* ]] || return 0
  local run="$OUT/$name/fold$fold"
  if [ ! -f "$run/summary.json" ]; then
    samadapt finetune --data "$OUT/dataset.yaml" --splits "$OUT/splits.json" --fold "$fold" --image-size "$SIZE" \
      --loss "$LOSS" --epochs "$EPOCHS" --batch-size "$BATCH" --keep last --seed "$SEED" --threads "$THREADS" \
      --out "$run" "$@"
  fi
  if [ ! -f "$run/eval/per_case.csv" ]; then
    samadapt evaluate --model "$run" --data "$OUT/dataset.yaml" --part val --fold "$fold" --out "$run/eval"
  fi
}

nnunet() {  # fold: nnU-Net trains and predicts the held-out frames itself, then scores them like the others
  local run="$OUT/nnunet/fold$1"
  [[ " $MODELS " == *" nnunet "* && ! -f "$run/summary.json" ]] || return 0
  samadapt baseline nnunet --data "$OUT/dataset.yaml" --splits "$OUT/splits.json" --fold "$1" --part val \
    --configuration 2d --image-size "$SIZE" --epochs "$NNUNET_EPOCHS" --iterations-per-epoch "$NNUNET_ITERATIONS" \
    --seed "$SEED" --threads "$THREADS" --out "$run"
}

for fold in $(seq 0 $((FOLDS - 1))); do
  nnunet "$fold"
  train unet "$fold" --model unet --train all --lr 1e-3
  train sam2_random "$fold" --model sam2-hiera-tiny --init random --train "$TRAIN" --lr "$SAM_LR"
  train mae_sam2 "$fold" --model sam2-hiera-tiny --init "mae:$MAE_RUN" --train "$TRAIN" --lr "$SAM_LR"
  train mae_sam2_decoder "$fold" --model sam2-hiera-tiny --init "mae:$MAE_RUN" --train decoder --lr "$DECODER_LR"
  train mae_sam2_lora "$fold" --model sam2-hiera-tiny --init "mae:$MAE_RUN" --train lora \
    --lora-rank "$LORA_RANK" --lora-alpha $((2 * LORA_RANK)) --lr "$LORA_LR"
done

# Pool the folds: one per-case table per model (every case appears once), then paired comparisons
# against the first SAM2 model trained (sam2_random when present).
for name in $MODELS; do
  mkdir -p "$OUT/pooled/$name"
  python - "$OUT/$name" "$OUT/pooled/$name" <<'PY'
import csv, sys
from pathlib import Path
root, pooled = Path(sys.argv[1]), Path(sys.argv[2])
rows = [row for f in sorted(root.glob("fold*/eval/per_case.csv")) for row in csv.DictReader(f.open())]
with (pooled / "per_case.csv").open("w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
print(f"{root.name}: {len(rows)} rows pooled")
PY
done
pooled=()
for name in sam2_random mae_sam2 mae_sam2_decoder mae_sam2_lora unet nnunet; do
  [[ " $MODELS " == *" $name "* ]] && pooled+=("$OUT/pooled/$name")
done
if [ ${#pooled[@]} -ge 2 ]; then
  samadapt compare "${pooled[@]}" --out "$OUT/compare"
  cat "$OUT/compare/compare.md"
fi
python -m benchmarks.cv_report "$OUT" $MODELS   # per class, mean ± sd over folds
