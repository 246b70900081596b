"""Catalogue of bad inputs: every one must end in a single `samadapt: error:` line naming the
problem, exit code 2, no traceback, and no output left behind.

Each case runs `samadapt.cli.main` in-process with the working directory set to the session's
`bad_world` folder (see conftest.py). "No output left behind" is checked on the whole folder: its
tree (paths, sizes, modification times) must be identical before and after the command, so a
created output folder, a half-written file or a leftover staging folder all fail the case.
"""

from __future__ import annotations

import errno
import shlex
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from samadapt.cli import main

DEV_FULL = Path("/dev/full")


def tree_state(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its kind, size and modification time (for "nothing changed")."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        state[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns)
    return state


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # relative to bad_world
    message: str  # fragment of the one error line
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the command


FA = "--data fa --splits fa/splits.json"
HUB_OFFLINE = (("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", "bad/hf_cache"))
VOL = "anat3d/images/A0001.nii.gz"  # 32x32x8
TINY_MAE = "--image-size 64 --batch-size 1 --epochs 1 --warmup-epochs 0"

CASES = [
    # ---------------------------------------------------------------- files and folders (predict)
    Case("missing-input", "predict --input bad/nothing.png --out out", "bad/nothing.png: input not found"),
    Case("zero-byte-png", "predict --input bad/empty.png --out out", "bad/empty.png: file is empty (0 bytes)"),
    Case("truncated-png", "predict --input bad/truncated.png --out out", "bad/truncated.png: cannot decode image"),
    Case("truncated-jpeg", "predict --input bad/truncated.jpg --out out", "bad/truncated.jpg: cannot decode image"),
    Case("five-channel-tiff", "predict --input bad/five_channels.tif --out out",
         "expected a 2D image with 1-4 channels, found shape (64, 64, 5)"),
    Case("text-named-png", "predict --input bad/garbage.png --out out", "bad/garbage.png: not a readable image"),
    Case("unsupported-extension", "predict --input bad/notes.txt --out out", "unsupported image type '.txt'"),
    Case("empty-folder", "predict --input bad/empty_dir --out out", "bad/empty_dir: no images"),
    Case("clashing-output-names", "predict --input bad/collide --out out", "two inputs share the name 'a'"),
    Case("output-under-a-file", "predict --input bad/ok.png --out bad/a_file/sub", "bad/a_file is not a folder"),
    Case("output-is-a-file", "predict --input bad/ok.png --out bad/a_file", "exists and is not a folder"),
    # ---------------------------------------------------------------- propagate (volumes)
    Case("propagate-out-overwrites-the-input", f"propagate --input {VOL} --box 3 2 2 20 20 --out {VOL}",
         "the output would overwrite an input"),
    Case("propagate-frames-out-inside-the-input", "propagate --input anat2d/images --box 0 2 2 20 20 "
         "--out anat2d/images/labels", "output folder is, or is inside, the input"),
    Case("propagate-slice-outside-volume", f"propagate --input {VOL} --box 9 2 2 20 20 --out seg.nii.gz",
         "--box 9 2 2 20 20: slice 9 is outside the 8 slices"),
    Case("propagate-labels-of-another-shape", f"propagate --input {VOL} --labels bad/ok.png --key-slice 3 "
         "--out seg.nii.gz", "bad/ok.png: labels of in-plane shape 64x64 do not fit the input's 32x32 slices"),
    Case("propagate-class-without-pixels-on-key-slice", f"propagate --input {VOL} --labels bad/two_classes.nii.gz "
         "--key-slice 1 --out seg.nii.gz", "class(es) 2 have no pixels on the key slice(s) 1"),
    Case("propagate-empty-key-slice", f"propagate --input {VOL} --labels bad/two_classes.nii.gz --key-slice 0 "
         "--out seg.nii.gz", "have no pixels on the key slice(s) 0"),
    Case("propagate-2d-image-for-a-volume", "propagate --input bad/ok.png --box 0 2 2 20 20 --out seg.nii.gz",
         "bad/ok.png: is a 2D image; propagate needs a volume"),
    Case("propagate-image-only-checkpoint", f"propagate --input {VOL} --box 3 2 2 20 20 --out seg.nii.gz "
         "--init sam2:bad/sam2_image_only.pt", "bad/sam2_image_only.pt: checkpoint has no memory weights"),
    Case("propagate-run-without-memory", f"propagate --input {VOL} --box 3 2 2 20 20 --out seg.nii.gz "
         "--init ckpt:ckpt_small", "ckpt_small: model has no memory weights"),
    Case("propagate-mae-init", f"propagate --input {VOL} --box 3 2 2 20 20 --out seg.nii.gz --init mae:fa",
         "an MAE run holds an encoder, not SAM2's memory"),
    Case("propagate-bf16-without-the-fast-encoder", f"propagate --input {VOL} --box 3 2 2 20 20 --out seg.nii.gz "
         "--precision bf16 --no-fast", "--precision bf16 needs the fast encoder"),
    Case("propagate-unknown-precision", f"propagate --input {VOL} --box 3 2 2 20 20 --out seg.nii.gz --precision fp16",
         "--precision fp16: expected one of"),
    Case("propagate-no-prompt", f"propagate --input {VOL} --out seg.nii.gz", "no prompt"),
    Case("propagate-negative-points-only", f"propagate --input {VOL} --point 3 5 5 0 --out seg.nii.gz",
         "slice 3 has only negative points"),
    Case("propagate-volume-to-png-folder", f"propagate --input {VOL} --box 3 2 2 20 20 --out seg",
         "the label volume is written as .nii or .nii.gz"),
    # ---------------------------------------------------------------- finetune-memory (volumes)
    Case("finetune-memory-2d-data", "finetune-memory --data anat2d --splits anat2d/splits.json --out run "
         "--image-size 64", "anat2d: the dataset is 2D (dims: 2d); memory training needs volumes"),
    Case("finetune-memory-clip-of-one-slice", "finetune-memory --data anat3d --splits anat3d/splits.json --out run "
         "--clip-length 1", "--clip-length 1: must be at least 2"),
    Case("finetune-memory-weights-without-memory", "finetune-memory --data anat3d --splits anat3d/splits.json "
         "--out run --image-size 64 --init ckpt:ckpt_small", "ckpt_small: model has no memory weights"),
    Case("finetune-memory-image-only-checkpoint", "finetune-memory --data anat3d --splits anat3d/splits.json "
         "--out run --image-size 64 --init sam2:bad/sam2_image_only.pt", "checkpoint has no memory weights"),
    Case("finetune-memory-mae-init-not-a-run", "finetune-memory --data anat3d --splits anat3d/splits.json --out run "
         "--init mae:fa", "fa: not a pre-training run folder"),
    # ---------------------------------------------------------------- argument values
    Case("unknown-model", "predict --input bad/ok.png --out out --model sam3-giant", "unknown model 'sam3-giant'"),
    Case("point-outside-image", "predict --input bad/ok.png --out out --point 80 10",
         "--point 80 10 lies outside the 64x64 image"),
    Case("box-corners-swapped", "predict --input bad/ok.png --out out --box 40 40 10 10", "needs x0 < x1 and y0 < y1"),
    Case("box-missing-a-number", "predict --input bad/ok.png --out out --box 1 2 3", "--box"),
    Case("negative-image-size", "predict --input bad/ok.png --out out --image-size -3", "--image-size -3"),
    Case("non-numeric-image-size", "predict --input bad/ok.png --out out --image-size big", "Invalid value for '--image-size'"),
    Case("zero-threads", "predict --input bad/ok.png --out out --threads 0", "--threads 0"),
    Case("unknown-option", "predict --input bad/ok.png --out out --frobnicate", "--frobnicate"),
    Case("unknown-family", "models --family yolo", "--family must be sam2 or sam, got 'yolo'"),
    Case("phantom-size-too-small", "phantom --out out --size 8", "--size must be between 32 and 4096, got 8"),
    Case("phantom-unknown-kind", "phantom --out out --kind ct", "--kind must be 'fa' or 'anatomy'"),
    Case("phantom-montage-of-volumes", "phantom --out out --kind anatomy --dims 3d --n 2 --size 32 --montage m.png",
         "--montage draws 2D phantoms"),
    Case("compare-too-few-resamples", "compare a b --out out --resamples 5", "--resamples 5"),
    # ---------------------------------------------------------------- checkpoints and weights
    Case("pickle-that-runs-code", "predict --input bad/ok.png --out out --init sam2:bad/runs_code.pt",
         "refusing to load"),
    Case("zero-byte-weights", "predict --input bad/ok.png --out out --init sam2:bad/empty.pt",
         "weights file is empty (0 bytes)"),
    Case("flipped-byte-checkpoint", "predict --input bad/ok.png --out out --init ckpt:ckpt_flipped",
         "ckpt_flipped/model.safetensors: sha256 mismatch"),
    Case("checkpoint-of-another-variant", "predict --input bad/ok.png --out out --model sam2-hiera-tiny --init ckpt:ckpt_small",
         "checkpoint is sam2-hiera-small but the model is sam2-hiera-tiny"),
    Case("image-as-weights", "predict --input bad/ok.png --out out --init sam2:bad/ok.png", "bad/ok.png"),
    Case("init-bare-path", "predict --input bad/ok.png --out out --init ckpt_small",
         "(for a weights file or folder: sam2:ckpt_small)"),
    Case("init-unknown-kind", "predict --input bad/ok.png --out out --init imagenet:x", "--init 'imagenet:x': use random"),
    Case("init-kind-without-path", "predict --input bad/ok.png --out out --init sam2:", "--init 'sam2:'"),
    Case("predict-init-mae", "predict --input bad/ok.png --out out --init mae:fa", "predict takes random, sam2:PATH, hf:ORG/NAME[@REVISION] or ckpt:DIR"),
    Case("hub-offline-not-cached", "predict --input bad/ok.png --out out --init hf:nobody/no-such-model",
         "hf:nobody/no-such-model: not in the Hugging Face cache bad/hf_cache and HF_HUB_OFFLINE is set", HUB_OFFLINE),
    Case("hub-another-architecture", "predict --input bad/ok.png --out out --init hf:acme/vit-base",
         "hf:acme/vit-base: the repository holds a 'vit' model (config.json model_type), not SAM2 or SAM", HUB_OFFLINE),
    Case("hub-several-weight-files", "predict --input bad/ok.png --out out --init hf:acme/two-checkpoints",
         "the repository holds 2 weight files (a.pt, b.pt); name one, e.g. hf:acme/two-checkpoints/a.pt", HUB_OFFLINE),
    Case("hub-malformed-name", "predict --input bad/ok.png --out out --init hf:just-a-name",
         "--init 'hf:just-a-name': expected hf:ORG/NAME[/FILE][@REVISION]"),
    Case("init-ckpt-not-a-checkpoint", "predict --input bad/ok.png --out out --init ckpt:bad/empty_dir",
         "not a samadapt checkpoint folder"),
    # ---------------------------------------------------------------- datasets
    Case("volume-given-as-description", "data check bad/nan.nii.gz", "not a dataset description"),
    Case("description-not-yaml", "data check bad/not_yaml.yaml", "not valid YAML"),
    Case("description-unknown-ct-window", "data check bad/unknown_window.yaml",
         "bad/unknown_window.yaml: intensity 'ct:liver': use percentile, percentile:LOW-HIGH, ct:soft_tissue|lung|bone|brain"),
    Case("description-unknown-key", "data check bad/unknown_key.yaml", "unknown keys in dataset description"),
    Case("mask-with-foreign-label", "data check fa_foreign", "1 problem(s) in dataset fa_foreign"),
    Case("volume-with-nan", "data check anat3d_nan", "1 problem(s) in dataset anat3d_nan"),
    Case("four-d-volume", "data check anat3d_4d", "1 problem(s) in dataset anat3d_4d"),
    Case("dataset-folder-missing", "data init bad/no_such_folder", "not a folder"),
    Case("description-wrong-suffix", "data init fa --out description.txt", "must end in .yaml, .yml or .json"),
    Case("zero-folds", "data split fa --folds 0 --out s.json", "--folds must be at least 1, got 0"),
    Case("test-fraction-above-one", "data split fa --test-fraction 1.5 --out s.json", "fractions must be in [0, 1)"),
    Case("more-folds-than-patients", "data split fa --folds 9 --out s.json", "too few for 9 fold(s)"),
    Case("split-output-is-a-folder", "data split fa --folds 2 --out fa", "fa: output path exists and is not a regular file"),
    Case("split-output-under-a-file", "data split fa --folds 2 --out bad/a_file/s.json", "bad/a_file"),
    Case("demo-data-missing", "demo --out out --quick --data nowhere", "nowhere: --data: dataset not found"),
    Case("demo-data-foreign-label", "demo --out out --quick --data fa_foreign", "label values outside the class list: 7"),
    Case("demo-output-is-a-file", "demo --out bad/a_file --quick", "exists and is not a folder"),
    Case("demo-zero-threads", "demo --out out --quick --threads 0", "--threads 0"),
    # ---------------------------------------------------------------- evaluate
    Case("ground-truth-folder-missing", "evaluate --pred fa/masks --gt nowhere --out out", "nowhere: ground-truth folder not found"),
    Case("unpaired-mask-folders", "evaluate --pred anat2d/masks --gt fa/masks --out out", "do not match"),
    Case("evaluate-model-not-a-run", "evaluate --model fa --data fa --out out", "fa: not a fine-tuning run"),
    Case("compare-without-results", "compare fa anat2d --out out", "fa: no per_case.csv"),
    Case("compare-table-without-columns", "compare bad/not_results bad/not_results --out out",
         "not_results/per_case.csv: not a per-case table"),
    Case("zero-byte-prediction", "evaluate --pred bad/eval/pred --gt bad/eval/gt --out out",
         "bad/eval/pred/c1.png: file is empty (0 bytes)"),
    Case("empty-class-names", "evaluate --pred bad/eval/gt --gt bad/eval/gt --out out --classes ,,",
         "--classes ',,'"),
    Case("case-ids-collide", "data init bad/collide", "two files map to case id 'a'"),
    # ---------------------------------------------------------------- pretrain
    Case("mask-ratio-above-one", f"pretrain --data fa --out run {TINY_MAE} --mask-ratio 1.5",
         "--mask-ratio must be strictly between 0 and 1, got 1.5"),
    Case("mask-ratio-zero", f"pretrain --data fa --out run {TINY_MAE} --mask-ratio 0", "strictly between 0 and 1"),
    Case("pretrain-unknown-path", f"pretrain --data fa --out run {TINY_MAE} --path medium", "--path must be sparse or dense"),
    Case("pretrain-sam1-model", f"pretrain --data fa --out run {TINY_MAE} --model sam-vit-base",
         "supports SAM2 Hiera models"),
    Case("pretrain-size-not-mask-unit", "pretrain --data fa --out run --image-size 50", "image size 50"),
    Case("pretrain-data-missing", f"pretrain --data nowhere --out run {TINY_MAE}", "nowhere: --data path does not exist"),
    Case("pretrain-batch-above-images", "pretrain --data fa --out run --image-size 64 --batch-size 200",
         "--batch-size 200 is larger than the 12 images"),
    Case("pretrain-init-runs-code", f"pretrain --data fa --out run {TINY_MAE} --init sam2:bad/runs_code.pt", "refusing to load"),
    Case("pretrain-init-flipped-byte", f"pretrain --data fa --out run {TINY_MAE} --init ckpt:ckpt_flipped", "sha256 mismatch"),
    Case("pretrain-four-d-volume", f"pretrain --data bad/four_d.nii.gz --out run {TINY_MAE}", "expected a 3D volume"),
    Case("pretrain-volume-with-nan", f"pretrain --data bad/nan.nii.gz --out run {TINY_MAE}", "NaN"),
    Case("dicom-two-series-no-choice", f"pretrain --data bad/dicom_two_series --out run {TINY_MAE}",
         "bad/dicom_two_series: 2 DICOM series in the folder; choose one with --series UID: 1.2.826.0.9.1 (4 slices), "
         "1.2.826.0.9.2 (4 slices)"),
    Case("dicom-missing-slice", f"pretrain --data bad/dicom_missing_slice --out run {TINY_MAE}",
         "bad/dicom_missing_slice: missing slice(s): a gap of 5.000 mm between slice001 and slice002"),
    Case("dicom-duplicated-slice", f"pretrain --data bad/dicom_duplicate_slice --out run {TINY_MAE}",
         "slice002: duplicated slice: slice001 and slice002 share position"),
    Case("dicom-uneven-spacing", f"pretrain --data bad/dicom_uneven_spacing --out run {TINY_MAE}",
         "bad/dicom_uneven_spacing: inconsistent slice spacing: 1.500 mm between slice001 and slice002"),
    Case("dicom-compressed-without-decoder", f"pretrain --data bad/dicom_htj2k --out run {TINY_MAE}",
         "bad/dicom_htj2k/slice000: pixel data uses transfer syntax 1.2.840.10008.1.2.4.201 (High-Throughput JPEG 2000"),
    Case("dicom-without-image", f"pretrain --data bad/report.dcm --out run {TINY_MAE}",
         "bad/report.dcm: DICOM object holds no image"),
    Case("nrrd-header-outside-folder", f"pretrain --data bad/nrrd_header/v.nhdr --out run {TINY_MAE}",
         "bad/nrrd_header/v.nhdr: detached header points to data file '../nrrd_data/v.raw.gz' outside its folder"),
    Case("pretrain-five-channel-tiff", f"pretrain --data bad/five_channels.tif --out run {TINY_MAE}", "1-4 channels"),
    Case("pretrain-output-under-a-file", f"pretrain --data fa --out bad/a_file/run {TINY_MAE}", "bad/a_file"),
    Case("pretrain-negative-workers", f"pretrain --data fa --out run {TINY_MAE} --workers -1", "--workers -1"),
    # ---------------------------------------------------------------- finetune and ablate-loss
    Case("unknown-loss-term", f"finetune {FA} --out run --loss dice+hinge", "unknown loss term 'hinge'"),
    Case("fold-outside-split", f"finetune {FA} --out run --fold 5", "--fold 5 is outside the split"),
    Case("splits-of-another-dataset", "finetune --data anat2d --splits fa/splits.json --out run",
         "splits are for dataset 'phantom-fa'"),
    Case("splits-file-not-json", "finetune --data fa --splits bad/a_file --out run", "cannot read splits"),
    Case("finetune-unknown-train-mode", f"finetune {FA} --out run --train everything", "--train must be one of"),
    Case("finetune-layer-decay-above-one", f"finetune {FA} --out run --layer-decay 2", "layer_decay must be in (0, 1]"),
    Case("finetune-unknown-recipe", f"finetune {FA} --out run --init random --recipe mae", "--recipe 'mae'"),
    Case("finetune-warmup-fraction-one", f"finetune {FA} --out run --warmup-fraction 1", "--warmup-fraction"),
    Case("finetune-init-runs-code", f"finetune {FA} --out run --init sam2:bad/runs_code.pt", "refusing to load"),
    Case("finetune-mask-with-foreign-label", "finetune --data fa_foreign --splits fa/splits.json --out run "
         "--image-size 64 --epochs 1", "label values outside the class list: 7"),
    Case("finetune-output-under-a-file", f"finetune {FA} --out bad/a_file/run --image-size 64", "bad/a_file"),
    Case("finetune-negative-workers", f"finetune {FA} --out run --image-size 64 --workers -1", "--workers -1"),
    Case("ablation-unknown-loss", f"ablate-loss {FA} --out out --losses dice,hinge", "unknown presets ['hinge']"),
    Case("ablation-negative-threads", f"ablate-loss {FA} --out out --threads -1", "--threads -1: must be at least 1"),
    Case("finetune-init-bare-path", f"finetune {FA} --out run --init bad/runs_code.pt", "sam2:bad/runs_code.pt"),
    Case("finetune-lora-option-with-train-all", f"finetune {FA} --out run --train all --lora-rank 4",
         "--lora-rank applies only to --train lora, not --train all"),
    Case("finetune-lora-rank-zero", f"finetune {FA} --out run --train lora --lora-rank 0", "--lora-rank 0: must be at least 1"),
    Case("finetune-lora-target-matches-nothing", f"finetune {FA} --out run --image-size 64 --train lora "
         "--lora-targets qkv,attention", "--lora-targets 'attention' matches no linear layer"),
    Case("finetune-lora-on-a-unet", f"finetune {FA} --out run --image-size 64 --model unet --train lora",
         "the unet baseline has no adapters"),
    Case("ablation-fold-outside-split", f"ablate-loss {FA} --out out --folds 7", "folds [7] are outside the split"),
    # ---------------------------------------------------------------- export, predict --backend onnxruntime
    Case("predict-bf16-with-a-unet-run", "predict --model unet_run --input anat2d/images --out out --precision bf16",
         "applies to SAM2 image encoders"),
    Case("export-a-unet-run", "export --model unet_run --out onnx", "the unet baseline is a U-Net"),
    Case("export-a-run-missing-its-weights", "export --model run_missing --out onnx",
         "run_missing/model/model.safetensors: checkpoint file is missing"),
    Case("export-unknown-format", "export --model unet_run --out onnx --format tflite", "--format 'tflite'"),
    Case("export-unknown-quantization", "export --model unet_run --out onnx --quantize int4", "--quantize 'int4'"),
    Case("export-nothing-there", "export --model no_such_run --out onnx", "no_such_run: not found"),
    Case("predict-onnx-file-of-another-variant", "predict --backend onnxruntime --model onnx_mixed --input bad/ok.png "
         "--out out", "encoder.onnx was exported from sam2-hiera-small at 64 px, but this folder is sam2-hiera-tiny"),
    Case("predict-onnx-not-an-export", "predict --backend onnxruntime --model ckpt_small --input bad/ok.png --out out",
         "--model must be a folder from `samadapt export --format onnx`"),
    Case("predict-unknown-backend", "predict --backend tensorrt --input bad/ok.png --out out", "--backend 'tensorrt'"),
    # ---------------------------------------------------------------- few-shot
    Case("more-shots-than-images", "fewshot train --data anat2d --cache anat2d_cache --out run --shots 50",
         "--shots 50 is more than the 4 labelled images"),
    Case("more-shots-than-split-pool", "fewshot train --data anat2d --cache anat2d_cache --out run --shots 3 "
         "--splits anat2d/splits.json", "--shots 3 is more than the 2 labelled images"),
    Case("zero-shots", "fewshot train --data anat2d --cache anat2d_cache --out run --shots 0", "--shots 0: must be at least 1"),
    Case("fewshot-fold-outside-split", "fewshot train --data anat2d --cache anat2d_cache --out run --shots 1 "
         "--splits anat2d/splits.json --fold 3", "fold 3 does not exist"),
    Case("not-a-feature-cache", "fewshot train --data anat2d --cache bad --out run", "not a few-shot feature cache"),
    Case("fewshot-unknown-loss", "fewshot train --data anat2d --cache anat2d_cache --out run --shots 1 --loss hinge",
         "unknown loss term 'hinge'"),
    Case("fewshot-cache-of-other-model", "fewshot train --data anat2d --cache anat2d_cache --out run --shots 1 "
         "--model sam2-hiera-small", "cache was built with model sam2-hiera-tiny"),
    Case("fewshot-cache-volume-with-nan", "fewshot cache --data anat3d_nan --out cache --image-size 64",
         "volume contains NaN"),
    Case("fewshot-cache-four-d-volume", "fewshot cache --data anat3d_4d --out cache --image-size 64",
         "expected a 3D volume"),
    Case("fewshot-cache-zero-batch", "fewshot cache --data anat2d --out cache --image-size 64 --batch-size 0",
         "--batch-size 0"),
    Case("fewshot-predict-unknown-series", "fewshot predict --model fa --input bad/dicom_two_series --out out --series 9.9",
         "bad/dicom_two_series: --series '9.9' is not in the folder; it holds 1.2.826.0.9.1, 1.2.826.0.9.2"),
    Case("fewshot-predict-series-of-a-file", "fewshot predict --model fa --input bad/nan.nii.gz --out out --series 1.2",
         "--series '1.2' needs --input to be one DICOM series folder"),
    Case("fewshot-predict-dicom-seg-of-nifti", "fewshot predict --model fa --input bad/nan.nii.gz --out out --dicom-seg",
         "bad/nan.nii.gz: --dicom-seg writes segmentations referencing a DICOM series"),
    Case("fewshot-predict-not-a-run", "fewshot predict --model fa --input anat2d/images --out out", "fa: not a few-shot run"),
    Case("fewshot-propagate-weights-without-memory", f"fewshot predict --model fs_run_no_memory --input {VOL} "
         "--out out --propagate", "ckpt_small: model has no memory weights"),
    Case("fewshot-propagate-2d-images", "fewshot predict --model fs_run --input anat2d/images --out out --propagate",
         "anat2d/images: --propagate segments volumes"),
    Case("fewshot-propagate-support-without-data", f"fewshot predict --model fs_run --input {VOL} --out out "
         "--propagate --seed-slices support", "--seed-slices support reads the run's support slices"),
    Case("fewshot-propagate-support-data-of-another-dataset", f"fewshot predict --model fs_run --input {VOL} "
         "--out out --propagate --seed-slices support --support-data anat3d", "anat3d: has no labelled case"),
    Case("fewshot-propagate-unknown-seeding", f"fewshot predict --model fs_run --input {VOL} --out out --propagate "
         "--seed-slices random", "--seed-slices 'random': must be one of confident, support"),
    Case("fewshot-propagate-zero-seeds", f"fewshot predict --model fs_run --input {VOL} --out out --propagate "
         "--seed-count 0", "--seed-count 0: must be at least 1"),
    Case("fewshot-evaluate-propagate-2d", "fewshot evaluate --model fs_run --data anat2d --out out --propagate",
         "anat2d: --propagate segments volumes; the dataset holds 2D images"),
    Case("fewshot-cache-init-unknown-kind", "fewshot cache --data anat2d --out cache --image-size 64 --init imagenet",
         "--init 'imagenet': use random, sam2:PATH, hf:ORG/NAME[@REVISION], mae:RUN_DIR or ckpt:DIR"),
    Case("fewshot-cache-mae-run-missing", "fewshot cache --data anat2d --out cache --image-size 64 --init mae:fa",
         "fa: not a pre-training run folder"),
    Case("fewshot-baseline-init-mae", "fewshot baseline --data anat2d --out out --init mae:fa", "mask decoder never trained"),
    Case("fewshot-baseline-unknown-part", "fewshot baseline --data anat2d --out out --splits anat2d/splits.json "
         "--part holdout", "holdout"),
    Case("pretrain-init-mae-run-missing", f"pretrain --data fa --out run {TINY_MAE} --init mae:fa",
         "not a pre-training run folder"),
    Case("fewshot-baseline-unknown-prompt", "fewshot baseline --data anat2d --out out --prompt lasso",
         "--prompt must be one of point, box"),
    # ---------------------------------------------------------------- baseline nnunet
    Case("nnunet-3d-configuration-on-2d-data", "baseline nnunet --data anat2d --splits anat2d/splits.json "
         "--out out --configuration 3d_fullres", "--configuration 3d_fullres needs a 3D dataset"),
    Case("nnunet-unknown-configuration", "baseline nnunet --data anat2d --splits anat2d/splits.json --out out "
         "--configuration 3d_lowres", "--configuration must be one of 2d, 3d_fullres"),
    Case("nnunet-zero-iterations", "baseline nnunet --data anat2d --splits anat2d/splits.json --out out "
         "--iterations-per-epoch 0", "--iterations-per-epoch 0: must be at least 1"),
    Case("nnunet-out-not-empty", "baseline nnunet --data anat2d --splits anat2d/splits.json --out fa",
         "fa: output folder is not empty"),
    Case("nnunet-unlabeled-data", "baseline nnunet --data anat2d/images --splits anat2d/splits.json --out out",
         "dataset has no masks"),
    Case("nnunet-image-size-on-volumes", "baseline nnunet --data anat3d --splits anat2d/splits.json --out out "
         "--configuration 3d_fullres --image-size 64", "--image-size applies to 2D datasets"),
    Case("nnunet-fold-outside-splits", "baseline nnunet --data anat2d --splits anat2d/splits.json --out out "
         "--fold 3", "fold 3 does not exist"),
    # ---------------------------------------------------------------- studio (fails before serving)
    Case("studio-missing-folder", "studio bad/nothing", "bad/nothing: studio folder not found"),
    Case("studio-folder-is-a-file", "studio bad/ok.png", "bad/ok.png: not a folder"),
    Case("studio-port-out-of-range", "studio bad/empty_dir --port 70000",
         "--port 70000: must be a port number in 0..65535"),
    Case("studio-mae-init", "studio bad/empty_dir --init mae:fa", "mae:fa"),
]

# ---------------------------------------------------------------- whole-class checks
CASES += [
    # splits files that leak: every reader goes through data.splits.load_splits -> check_splits
    Case("splits-case-in-train-and-test", "finetune --data fa --splits bad/splits_train_and_test.json --out run",
         "is in both train and test"),
    Case("splits-val-is-train", "finetune --data fa --splits bad/splits_val_is_train.json --out run",
         "the val part is the train part"),
    Case("splits-unknown-case", "finetune --data fa --splits bad/splits_unknown_case.json --out run",
         "missing from the dataset: P9999-1"),
    Case("splits-case-twice", "finetune --data fa --splits bad/splits_train_twice.json --out run", "is twice in train"),
    Case("fewshot-splits-leak", "fewshot train --data fa --cache anat2d_cache --out run --shots 1 "
         "--splits bad/splits_train_and_test.json", "is in both train and test"),
    Case("nnunet-splits-leak", "baseline nnunet --data fa --splits bad/splits_val_is_train.json --out out",
         "the val part is the train part"),
    # a label value that is no class: one line naming the file and the value, not an invented class
    Case("evaluate-stray-label", "evaluate --pred bad/eval_stray/pred --gt bad/eval_stray/gt --out out",
         "bad/eval_stray/pred/c1.png: label value 7 is in no ground-truth mask"),
    Case("evaluate-label-beyond-classes", "evaluate --pred bad/eval_stray/pred --gt bad/eval_stray/gt --out out "
         "--classes vessel", "bad/eval_stray/pred/c1.png: label value 7 is not one of the 1 --classes"),
    # what `data check` rejects, every command rejects up front with the same words
    Case("finetune-mask-size-mismatch", "finetune --data fa_size --splits fa/splits.json --out run --image-size 64 "
         "--epochs 1", "fa_size/masks/P0001-1.png: mask size (32, 32) differs from image size (64, 64)"),
    Case("demo-mask-size-mismatch", "demo --data fa_size --out demo_out", "mask size (32, 32) differs from image size"),
    # run folders as a unit: incomplete folders are refused by readers; outputs never inside inputs
    Case("init-from-incomplete-run", f"finetune {FA} --out run --image-size 64 --init ckpt:ckpt_incomplete",
         "ckpt_incomplete: model folder is incomplete"),
    Case("fewshot-train-incomplete-cache", "fewshot train --data anat2d --cache cache_incomplete --out run --shots 1",
         "cache_incomplete: feature cache is incomplete"),
    Case("predict-out-inside-input", "predict --input anat2d/images --out anat2d/images/masks",
         "output folder is, or is inside, the input anat2d/images"),
    Case("fewshot-cache-out-inside-images", "fewshot cache --data anat2d --out anat2d/images/cache --image-size 64",
         "output folder is, or is inside, the input"),
    Case("finetune-out-is-the-dataset", f"finetune {FA} --out fa --image-size 64", "output folder is, or is inside"),
]

# Numbers the training commands refuse (each config's validate()): not finite, out of range, not a number.
NUMERIC_COMMANDS = {
    "pretrain": f"pretrain --data fa --out run {TINY_MAE}",
    "finetune": f"finetune {FA} --out run --image-size 64",
    "fewshot-train": "fewshot train --data anat2d --cache anat2d_cache --out run --shots 1",
}
NUMERIC_VALUES = [  # option, value, fragment of the error line
    ("--lr", "nan", "--lr nan: must be a finite number"),
    ("--lr", "inf", "--lr inf: must be a finite number"),
    ("--lr", "-1", "--lr -1.0: must be > 0"),
    ("--lr", "0", "--lr 0.0: must be > 0"),
    ("--epochs", "0", "--epochs 0: must be at least 1"),
    ("--epochs", "-3", "--epochs -3: must be at least 1"),
    ("--epochs", "nan", "Invalid value for '--epochs'"),
    ("--grad-clip", "nan", "--grad-clip nan: must be a finite number"),
    ("--grad-clip", "inf", "--grad-clip inf: must be a finite number"),
    ("--grad-clip", "-1", "--grad-clip -1.0: must be >= 0"),
]
CASES += [Case(f"{name}-{option.lstrip('-')}-{value}", f"{command} {option} {value}", fragment)
          for name, command in NUMERIC_COMMANDS.items() for option, value, fragment in NUMERIC_VALUES]

def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, message: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected exactly one stderr line, got:\n{err}"
    assert lines[0].startswith("samadapt: error: "), lines[0]
    assert message in lines[0], f"{message!r} not in {lines[0]!r}"
    assert code == 2, f"exit code {code}: {lines[0]}"
    return lines[0]


def test_the_catalogue_is_large_and_ids_are_unique():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case: Case, bad_world: Path, monkeypatch, capsys):
    monkeypatch.chdir(bad_world)
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    before = tree_state(bad_world)
    try:
        code, _, err = run_cli(shlex.split(case.command), capsys)
        after = tree_state(bad_world)
    finally:  # the world is shared: whatever a failing case created must not hide the next one's
        for added in sorted(set(tree_state(bad_world)) - set(before), reverse=True):
            path = bad_world / added
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    assert_one_line_error(code, err, case.message)
    assert after == before, f"outputs changed: added {sorted(set(after) - set(before))[:5]}, " \
                            f"changed {sorted(k for k in before if k in after and before[k] != after[k])[:5]}"
    assert not (bad_world / "bad" / "CODE_RAN").exists()


@pytest.mark.skipif(not DEV_FULL.is_char_device(), reason="/dev/full is not available")
def test_output_file_on_a_device_is_refused_and_the_device_survives(bad_world, monkeypatch, capsys):
    """Writing by rename would replace /dev/full with a regular file (as root); it must be refused."""
    monkeypatch.chdir(bad_world)
    code, _, err = run_cli(["data", "split", "fa", "--folds", "2", "--out", str(DEV_FULL)], capsys)
    assert_one_line_error(code, err, "/dev/full: output path exists and is not a regular file")
    assert stat.S_ISCHR(DEV_FULL.stat().st_mode)


def test_disk_full_while_writing_a_file_is_one_line_and_leaves_no_file(bad_world, tmp_path, monkeypatch, capsys):
    from samadapt.engine import atomic

    real_fdopen = atomic.os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["data", "split", str(bad_world / "fa"), "--folds", "2", "--out", "splits.json"], capsys)
    assert_one_line_error(code, err, "splits.json: cannot write output (No space left on device)")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_disk_full_while_filling_an_output_folder_leaves_no_folder(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_write_bytes = Path.write_bytes

    def write_bytes(self, data):
        calls["n"] += 1
        if calls["n"] > 3:  # a few files fit, then the disk is full
            real_write_bytes(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["phantom", "--out", "phantoms", "--n", "4", "--size", "32"], capsys)
    assert_one_line_error(code, err, "phantoms: cannot write output (No space left on device)")
    assert list(tmp_path.iterdir()) == []  # no output folder, no staging folder


def test_debug_flag_shows_the_traceback_instead(bad_world, monkeypatch):
    from samadapt.errors import UserError

    monkeypatch.chdir(bad_world)
    with pytest.raises(UserError, match="file is empty"):
        main(["predict", "--input", "bad/empty.png", "--out", "out", "--debug"])
