"""GPU readiness check: every CUDA path of samadapt, once, in a few minutes, on one GPU.

    python -m benchmarks.gpu_check --device cuda [--wheels gpu_wheels] [--work DIR] [--json FILE]
    python -m benchmarks.gpu_check --device cpu      # tiny sizes, the same stages (the test suite runs this)

Stages, each in its own process, timed, and recorded whatever happens to the others:

    install          (only with --wheels) pip install -e . --no-deps and the missing dependencies,
                     with no network, from carried wheels (benchmarks/gpu_wheels.sh makes them)
    env              torch, CUDA, the GPU, bf16 support, NCCL version, TF32 settings
    data             `samadapt phantom` + `samadapt data split`
    finetune_fp32    `samadapt finetune --train all --precision fp32`
    finetune_bf16    the same with `--precision bf16` (autocast)
    pretrain_sparse  `samadapt pretrain --path sparse` (MAE)
    fewshot_cache    `build_cache` with the frozen (fast) encoder on the device
    fewshot_train    `samadapt fewshot train` on that cache
    predict_fast     `run_predict` (box prompt) with the fast encoder on the device, fp32 and bf16
    torchrun_resume  `torchrun --nproc-per-node=1 -m ... pretrain` in a process group (NCCL on CUDA,
                     gloo on CPU), killed with SIGKILL after its first checkpoint, then `--resume`d
    parity           CPU vs device on the same weights in fp32: plain and fast encoder, decoder
                     (relative error ||a - b|| / ||b||, at most 1e-3)

Training stages report steps/s and images/s from the median optimiser step (data loading
included, the first step left out as warm-up), every stage its peak GPU memory (the largest
`torch.cuda.max_memory_allocated` of its process) and peak RSS. One JSON holds it all and a table
is printed. The exit code is 0 only when every stage passed; a stage that fails records its error
line and the others still run (those that need its output are skipped). On CUDA a stage that
allocated nothing on the GPU fails: it ran on the CPU.

The 1-process torchrun joins a real process group (one rank), so the collectives samadapt calls
itself (metric all-reduce, RNG gather for checkpoints, barriers) go through NCCL; DDP's gradient
all-reduce needs two GPUs and is not exercised.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/gpu_check.py` as well as `python -m benchmarks.gpu_check`
    sys.path.insert(0, str(REPO))

STAGES = ("install", "env", "data", "finetune_fp32", "finetune_bf16", "pretrain_sparse", "fewshot_cache",
          "fewshot_train", "predict_fast", "torchrun_resume", "parity")
NEEDS = {"finetune_fp32": "data", "finetune_bf16": "data", "pretrain_sparse": "data", "fewshot_cache": "data",
         "fewshot_train": "fewshot_cache", "predict_fast": "data", "torchrun_resume": "data"}
PARITY_TOLERANCE = 1e-3
MODEL = "sam2-hiera-tiny"

# Sizes: realistic on the GPU (Hiera-T, 512 px, batch 8), tiny on the CPU (the test suite).
PROFILES = {
    "cuda": {"size": 512, "labelled": 24, "unlabeled": 40, "batch": 8, "ft_repeat": 4, "ft_epochs": 1,
             "mae_epochs": 1, "cache_batch": 8, "shots": 4, "fs_epochs": 10, "predict_images": 16,
             "tr_epochs": 2, "tr_checkpoint_every": 4, "parity_batch": 2, "stage_timeout": 240},
    "cpu": {"size": 64, "labelled": 8, "unlabeled": 4, "batch": 2, "ft_repeat": 1, "ft_epochs": 1,
            "mae_epochs": 1, "cache_batch": 4, "shots": 2, "fs_epochs": 2, "predict_images": 2,
            "tr_epochs": 1, "tr_checkpoint_every": 2, "parity_batch": 1, "stage_timeout": 300},
}


# ============================================================================ worker (child process)
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _instrument_trainer(stats: dict) -> None:
    """Time every optimiser step (data loading included) and keep each fit's summary."""
    import torch

    from samadapt.engine.trainer import Trainer

    step, fit = Trainer._optimizer_step, Trainer.fit

    def timed_step(self, batches, group):
        start = time.perf_counter()
        out = step(self, batches, group)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        stats["steps"].append([time.perf_counter() - start, int(out[1]) * self.context.world_size])
        return out

    def recorded_fit(self, *args, **kwargs):
        summary = fit(self, *args, **kwargs)
        stats["fits"].append({k: summary.get(k) for k in ("status", "global_step", "epochs_completed",
                                                         "resumed_from", "seconds", "global_batch_size")})
        return summary

    Trainer._optimizer_step, Trainer.fit = timed_step, recorded_fit


def _join_process_group(backend: str, stats: dict) -> None:
    """torchrun with one process: samadapt alone would not create a group for a single rank."""
    import torch
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    stats["backend"] = dist.get_backend()
    stats["world_size"] = dist.get_world_size()
    if backend == "nccl":
        stats["nccl_version"] = _nccl_version()


def _nccl_version() -> str:
    import torch

    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def worker_main(stats_path: str, process_group: str | None, argv: list[str]) -> int:
    stats: dict = {"steps": [], "fits": [], "extra": {}, "rc": None}
    code = 1
    try:
        import torch

        _instrument_trainer(stats)
        if process_group:
            _join_process_group(process_group, stats)
        if argv and argv[0].startswith("@"):
            params = json.loads(argv[1]) if len(argv) > 1 else {}
            stats["extra"] = LIBRARY_STAGES[argv[0][1:]](**params) or {}
            code = 0
        else:
            from samadapt.cli import main

            code = main(argv)
    except Exception as exc:  # the parent reads the last stderr line
        import traceback

        traceback.print_exc()
        print(f"gpu_check: error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        code = 1
    finally:
        stats["rc"] = code
        stats["peak_rss_mb"] = _peak_rss_mb()
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                stats["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
                stats["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        if os.environ.get("RANK", "0") == "0":
            Path(stats_path).write_text(json.dumps(stats))
    return code


# ------------------------------------------------------------------------- library stages (in the worker)
def stage_env(device: str) -> dict:
    import platform

    import torch

    import samadapt

    info = {"python": platform.python_version(), "torch": torch.__version__, "samadapt": samadapt.__version__,
            "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no CUDA GPU")
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    cuda=torch.version.cuda, bf16_supported=torch.cuda.is_bf16_supported(),
                    nccl=_nccl_version(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
        torch.zeros(1, device="cuda")  # the CUDA context comes up
    return info


def stage_fewshot_cache(device: str, data: str, out: str, size: int, batch: int) -> dict:
    import torch

    from samadapt.data.dataset import load_dataset
    from samadapt.fewshot.cache import build_cache, build_frozen_model

    cases = load_dataset(data).cases
    model = build_frozen_model(MODEL, None, size).to(device)  # seeded random weights, fast encoder
    with torch.inference_mode():  # warm-up outside the timing (CUDA kernels, allocator)
        model.encode(torch.zeros(1, 3, size, size, device=device))
    report = build_cache(cases, out, MODEL, None, size, batch_size=batch, model=model)
    return {"images": report.encoded, "images_per_s": report.encoded / max(report.seconds_encoding, 1e-9),
            "seconds_encoding": report.seconds_encoding, "mib": report.total_bytes / 2**20}


def stage_predict_fast(device: str, images: str, out: str, size: int, count: int) -> dict:
    import torch

    from samadapt.data.io import read_image
    from samadapt.inference.predict import Prompt, collect_images, run_predict, segment
    from samadapt.modeling.fast import accelerate
    from samadapt.modeling.loading import load_model

    inputs = collect_images(images)[:count]
    height, width = read_image(inputs[0]).shape[:2]
    prompt = Prompt(box=(width * 0.25, height * 0.25, width * 0.75, height * 0.75))
    torch.manual_seed(0)
    base = load_model(MODEL, image_size=size).eval().to(device)
    result = {}
    for precision in ("fp32", "bf16"):
        net = accelerate(base, fast=True, compile=False, precision=precision, announce=False)
        segment(net, read_image(inputs[0]), prompt)  # warm-up
        summary = run_predict(net, inputs, Path(out) / precision, prompt, progress=False)
        seconds = summary["seconds"]
        result[precision] = {"images_per_s": len(inputs) / sum(seconds.values()),
                             "encode_images_per_s": len(inputs) / max(seconds["encode"], 1e-9),
                             "seconds": {k: round(v, 4) for k, v in seconds.items()}}
    result["images"] = len(inputs)
    result["images_per_s"] = result["fp32"]["images_per_s"]
    return result


def _relative(a, b) -> float:
    import torch

    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp(min=1e-30))


def _features_error(got, ref) -> float:
    return max(_relative(g, r) for g, r in zip(got.as_dict().values(), ref.as_dict().values()))


def stage_parity(device: str, size: int, batch: int) -> dict:
    import copy

    import torch

    from samadapt.modeling.fast import accelerate
    from samadapt.modeling.loading import load_model

    torch.manual_seed(0)
    reference = load_model(MODEL, image_size=size).eval()  # fp32 on the CPU, plain encoder
    on_device = copy.deepcopy(reference).to(device)
    fast = accelerate(copy.deepcopy(reference).to(device), fast=True, compile=False, precision="fp32", announce=False)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 3, size, size, generator=generator)
    boxes = torch.tensor([[size * 0.2, size * 0.3, size * 0.7, size * 0.8]]).expand(batch, 1, 4).contiguous()
    with torch.inference_mode():
        ref_features = reference.encode(pixels)
        ref_out = reference.decode(ref_features, boxes=boxes, multimask=True)
        plain = on_device.encode(pixels.to(device))
        fast_features = fast.encode(pixels.to(device))
        # the decoder on the very same (CPU) features, so its own error is seen alone
        dev_out = on_device.decode(ref_features.to(device), boxes=boxes.to(device), multimask=True)
        chain = on_device.decode(plain, boxes=boxes.to(device), multimask=True)
    errors = {"encoder_plain": _features_error(plain, ref_features),
              "encoder_fast": _features_error(fast_features, ref_features),
              "decoder_logits": _relative(dev_out.logits, ref_out.logits),
              "decoder_iou": _relative(dev_out.iou, ref_out.iou),
              "encode_decode_logits": _relative(chain.logits, ref_out.logits)}
    bad = {k: v for k, v in errors.items() if not (v <= PARITY_TOLERANCE)}
    result = {"errors": errors, "tolerance": PARITY_TOLERANCE, "size": size, "batch": batch}
    if bad:
        raise RuntimeError("CPU/device parity above " + f"{PARITY_TOLERANCE:g}: "
                           + ", ".join(f"{k} {v:.2e}" for k, v in bad.items()))
    return result


LIBRARY_STAGES = {"env": stage_env, "fewshot_cache": stage_fewshot_cache, "predict_fast": stage_predict_fast,
                  "parity": stage_parity}


# ============================================================================ parent (the check itself)
class Check:
    def __init__(self, device: str, work: Path, budget_s: float, wheels: Path | None, keep: bool):
        self.device, self.work, self.wheels, self.keep = device, work, wheels, keep
        self.profile = dict(PROFILES[device])
        self.deadline = time.monotonic() + budget_s
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, dict] = {}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        if device == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path even on a machine with a GPU
        self.env.pop("RANK", None), self.env.pop("WORLD_SIZE", None), self.env.pop("LOCAL_RANK", None)
        self.data = work / "data"
        self.description = self.data / "dataset.yaml"
        self.splits = work / "splits.json"

    # ------------------------------------------------------------------ running
    def _timeout(self) -> float:
        return max(1.0, min(self.profile["stage_timeout"], self.deadline - time.monotonic()))

    def _run(self, name: str, command: list[str], log, check: bool = True) -> subprocess.CompletedProcess:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        proc = subprocess.run(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.PIPE, text=True,
                              timeout=self._timeout())
        log.write(proc.stderr)
        log.flush()
        if check and proc.returncode != 0:
            raise StageError(_error_line(proc.stderr, proc.returncode))
        return proc

    def _worker(self, name: str, argv: list[str], log, process_group: str | None = None,
                launcher: list[str] | None = None) -> dict:
        """Run `argv` (samadapt CLI arguments, or '@stage' + JSON) in a worker process; its stats."""
        stats_path = self.work / f"{name}.stats.json"
        stats_path.unlink(missing_ok=True)
        command = [*(launcher or [sys.executable]), "-m", "benchmarks.gpu_check", "--worker", str(stats_path)]
        if process_group:
            command += ["--process-group", process_group]
        self._run(name, [*command, "--", *argv], log)
        if not stats_path.is_file():
            raise StageError("the worker wrote no statistics")
        return json.loads(stats_path.read_text())

    def stage(self, name: str, fn) -> None:
        need = NEEDS.get(name)
        if need and self.results.get(need, {}).get("status") != "ok":
            self.results[name] = {"status": "skipped", "error": f"needs stage {need}", "seconds": 0.0}
            return
        if time.monotonic() >= self.deadline:
            self.results[name] = {"status": "skipped", "error": "time budget spent", "seconds": 0.0}
            return
        start = time.perf_counter()
        log_path = self.logs / f"{name}.log"
        record: dict = {"log": str(log_path)}
        with open(log_path, "w") as log:
            try:
                record.update(fn(log) or {})
                if self.device == "cuda" and name not in ("install", "data") and not record.get("peak_gpu_mb"):
                    raise StageError("allocated nothing on the GPU: this stage ran on the CPU")
                record["status"], record["error"] = "ok", None
            except subprocess.TimeoutExpired as exc:
                record["status"], record["error"] = "failed", f"timed out after {exc.timeout:.0f} s"
            except StageError as exc:
                record["status"], record["error"] = "failed", str(exc)
            except Exception as exc:  # a bug in the check itself must not hide the other stages
                record["status"], record["error"] = "failed", f"{type(exc).__name__}: {exc}"
        record["seconds"] = time.perf_counter() - start
        self.results[name] = record
        line = f"[{name}] {record['status']} in {record['seconds']:.1f} s"
        print(line + (f": {record['error']}" if record["error"] else ""), flush=True)
        if record["status"] != "ok":
            tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
            print("\n".join(f"    {t}" for t in tail), flush=True)

    # ------------------------------------------------------------------ stages
    def install(self, log) -> dict:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        links = ["--no-index", "--find-links", str(self.wheels)]
        # build isolation takes setuptools and wheel from the carried folder too
        self._run("install", [*pip, "install", "-q", *links, "--no-deps", "-e", str(REPO)], log)
        missing = missing_requirements()
        if missing:
            self._run("install", [*pip, "install", "-q", *links, *missing], log)
        still = missing_requirements()
        if still:
            raise StageError(f"still missing after the install: {', '.join(still)}")
        return {"installed": missing}

    def env_stage(self, log) -> dict:
        stats = self._worker("env", ["@env", json.dumps({"device": self.device})], log)
        self.machine = stats["extra"]
        return _with_memory({"machine": stats["extra"]}, stats)

    def data_stage(self, log) -> dict:
        p = self.profile
        cli = [sys.executable, "-m", "samadapt"]
        shutil.rmtree(self.data, ignore_errors=True)
        self._run("data", [*cli, "phantom", "--out", str(self.data), "--n", str(p["labelled"]), "--size",
                           str(p["size"]), "--unlabeled", str(p["unlabeled"]), "--seed", "0"], log)
        self._run("data", [*cli, "data", "split", str(self.description), "--folds", "1", "--test-fraction", "0",
                           "--out", str(self.splits)], log)
        return {"images": p["labelled"] + p["unlabeled"]}

    def finetune(self, precision: str):
        def run(log) -> dict:
            p = self.profile
            out = self._fresh(f"finetune_{precision}")
            stats = self._worker(f"finetune_{precision}", [
                "finetune", "--data", str(self.description), "--splits", str(self.splits), "--out", str(out),
                "--model", MODEL, "--image-size", str(p["size"]), "--train", "all", "--batch-size", str(p["batch"]),
                "--epochs", str(p["ft_epochs"]), "--repeat", str(p["ft_repeat"]), "--no-augment",
                "--precision", precision, "--seed", "0"], log)
            summary = json.loads((out / "summary.json").read_text())
            loss = summary["last_train"].get("loss")
            if loss is None or not math.isfinite(loss):
                raise StageError(f"training loss is {loss}")
            return _with_memory({**_rates(stats), "final_loss": loss}, stats)
        return run

    def pretrain(self, log) -> dict:
        p = self.profile
        out = self._fresh("pretrain_sparse")
        stats = self._worker("pretrain_sparse", [*self._pretrain_args(out, p["mae_epochs"]), "--checkpoint-every", "0"],
                             log)
        return _with_memory(_rates(stats), stats)

    def _pretrain_args(self, out: Path, epochs: int) -> list[str]:
        p = self.profile
        return ["pretrain", "--data", str(self.description), "--data", str(self.data / "unlabeled"), "--out", str(out),
                "--model", MODEL, "--image-size",
                str(p["size"]), "--batch-size", str(p["batch"]), "--epochs", str(epochs), "--path", "sparse",
                "--warmup-epochs", "0", "--recon-every", "0", "--seed", "0"]

    def fewshot_cache(self, log) -> dict:
        p = self.profile
        params = {"device": self.device, "data": str(self.description), "out": str(self._fresh("fewshot_cache")),
                  "size": p["size"], "batch": p["cache_batch"]}
        stats = self._worker("fewshot_cache", ["@fewshot_cache", json.dumps(params)], log)
        return _with_memory(stats["extra"], stats)

    def fewshot_train(self, log) -> dict:
        p = self.profile
        out = self._fresh("fewshot_train")
        stats = self._worker("fewshot_train", [
            "fewshot", "train", "--data", str(self.description), "--cache", str(self.work / "fewshot_cache"),
            "--out", str(out), "--shots", str(p["shots"]), "--epochs", str(p["fs_epochs"]), "--batch-size", "2",
            "--seed", "0", "--model", MODEL, "--image-size", str(p["size"])], log)
        if not (out / "model").is_dir():
            raise StageError("no model folder was written")
        return _with_memory(_rates(stats), stats)

    def predict(self, log) -> dict:
        p = self.profile
        params = {"device": self.device, "images": str(self.data / "images"), "out": str(self._fresh("predict_fast")),
                  "size": p["size"], "count": p["predict_images"]}
        stats = self._worker("predict_fast", ["@predict_fast", json.dumps(params)], log)
        return _with_memory(stats["extra"], stats)

    def torchrun_resume(self, log) -> dict:
        p = self.profile
        out = self._fresh("torchrun_resume")
        backend = "nccl" if self.device == "cuda" else "gloo"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
        stats_path = self.work / "torchrun_resume.stats.json"
        args = [*self._pretrain_args(out, p["tr_epochs"]), "--checkpoint-every", str(p["tr_checkpoint_every"])]
        command = [*launcher, "-m", "benchmarks.gpu_check", "--worker", str(stats_path), "--process-group", backend,
                   "--", *args]
        log.write(f"$ {' '.join(command)}   (killed with SIGKILL after its first checkpoint)\n")
        log.flush()
        latest = out / "checkpoints" / "latest"
        proc = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=log, start_new_session=True)
        killed_at = None
        deadline = time.monotonic() + self._timeout()
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                step = _checkpoint_step(latest)
                if step:
                    _kill_tree(proc.pid)
                    killed_at = step
                    break
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                _kill_tree(proc.pid)
            proc.wait()
        if killed_at is not None:  # what the resumed run will find
            killed_at = _checkpoint_step(latest)
        if killed_at is None:
            raise StageError("the first run ended before it could be killed" if time.monotonic() < deadline
                             else "no checkpoint appeared in time")
        log.write(f"\n--- killed at checkpoint step {killed_at}; resuming\n")
        stats = self._worker("torchrun_resume", [*args, "--resume"], log, process_group=backend, launcher=launcher)
        fit = stats["fits"][-1] if stats["fits"] else {}
        if stats.get("backend") != backend:
            raise StageError(f"process group backend {stats.get('backend')}, expected {backend}")
        if not fit.get("resumed_from") or fit.get("status") != "completed":
            raise StageError(f"the resumed run did not continue from a checkpoint ({fit})")
        steps_after = len(stats["steps"])
        if steps_after + killed_at != fit["global_step"]:
            raise StageError(f"resumed at step {killed_at} and ran {steps_after} steps, "
                             f"but ended at step {fit['global_step']}")
        return _with_memory({**_rates(stats), "backend": stats["backend"], "nccl_version": stats.get("nccl_version"),
                             "killed_at_step": killed_at, "final_step": fit["global_step"],
                             "resumed_from": Path(fit["resumed_from"]).name}, stats)

    def parity(self, log) -> dict:
        p = self.profile
        stats = self._worker("parity", ["@parity", json.dumps({"device": self.device, "size": p["size"],
                                                                "batch": p["parity_batch"]})], log)
        return _with_memory(stats["extra"], stats)

    def _fresh(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    # ------------------------------------------------------------------ all of it
    def run(self, only: list[str] | None) -> dict:
        started = time.perf_counter()
        self.machine: dict = {}
        plan = [("install", self.install), ("env", self.env_stage), ("data", self.data_stage),
                ("finetune_fp32", self.finetune("fp32")), ("finetune_bf16", self.finetune("bf16")),
                ("pretrain_sparse", self.pretrain), ("fewshot_cache", self.fewshot_cache),
                ("fewshot_train", self.fewshot_train), ("predict_fast", self.predict),
                ("torchrun_resume", self.torchrun_resume), ("parity", self.parity)]
        for name, fn in plan:
            if name == "install" and self.wheels is None:
                continue
            if only and name not in only and name not in ("install", "env", "data"):
                continue
            self.stage(name, fn)
            if name == "env" and self.results[name]["status"] != "ok":
                for rest, _ in plan[plan.index((name, fn)) + 1:]:  # nothing would run where it should
                    self.results[rest] = {"status": "skipped", "error": "the env stage failed", "seconds": 0.0}
                break
        ok = all(r["status"] == "ok" for r in self.results.values())
        parity = self.results.get("parity", {}).get("errors")
        return {"suite": "gpu_check", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": self.device,
                "ok": ok, "seconds": time.perf_counter() - started, "machine": self.machine,
                "profile": self.profile, "parity_errors": parity, "stages": self.results}


class StageError(Exception):
    pass


def _error_line(stderr: str, code: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for prefix in ("samadapt: error:", "gpu_check: error:"):
        marked = [line for line in lines if line.startswith(prefix)]
        if marked:
            return marked[-1]
    return lines[-1] if lines else f"exit code {code}"


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts its workers in sessions of their own)."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def _checkpoint_step(latest: Path) -> int | None:
    try:
        match = re.match(r"ckpt-(\d+)\.pt", latest.read_text().strip())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _rates(stats: dict) -> dict:
    """steps/s and images/s of the median optimiser step (the process's first step is warm-up)."""
    steps = stats["steps"][1:] or stats["steps"]
    if not steps:
        raise StageError("no optimiser step was timed")
    seconds = statistics.median(s for s, _ in steps)
    images = statistics.median(n for _, n in steps)
    return {"steps": len(stats["steps"]), "steps_per_s": 1.0 / seconds, "images_per_s": images / seconds,
            "step_seconds_median": seconds}


def _with_memory(record: dict, stats: dict) -> dict:
    return {**record, "peak_gpu_mb": stats.get("peak_gpu_mb"), "peak_rss_mb": stats.get("peak_rss_mb")}


def missing_requirements() -> list[str]:
    """samadapt's dependencies (pyproject.toml) not installed at a version it accepts, as specifiers."""
    import importlib.metadata as metadata
    import tomllib

    from packaging.requirements import Requirement

    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = []
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def print_table(report: dict) -> None:
    rows = [("stage", "status", "s", "images/s", "steps/s", "peak GPU MB", "peak RSS MB", "error")]
    for name, r in report["stages"].items():
        rows.append((name, r["status"], _fmt(r.get("seconds")), _fmt(r.get("images_per_s")),
                     _fmt(r.get("steps_per_s")), _fmt(r.get("peak_gpu_mb")), _fmt(r.get("peak_rss_mb")),
                     (r.get("error") or "")[:100]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\nGPU readiness check ({report['device']}): {'all stages passed' if report['ok'] else 'FAILED'}"
          f" in {report['seconds']:.0f} s")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if report.get("parity_errors"):
        print("parity (relative error, CPU vs device, fp32): "
              + ", ".join(f"{k} {v:.1e}" for k, v in report["parity_errors"].items()))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:  # internal: one stage's process
        stats_path, rest = argv[1], argv[2:]
        group = None
        if rest[:1] == ["--process-group"]:
            group, rest = rest[1], rest[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return worker_main(stats_path, group, rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--wheels", type=Path, help="folder of carried wheels: install samadapt and what it lacks "
                                                    "from there, with no network")
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="where to write the report (default: benchmarks/results/gpu_check.json"
                                                  " or gpu_check_cpu.json)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all stages together (default 480)")
    parser.add_argument("--only", help="comma-separated stages to run (install, env and data always run)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    unknown = [s for s in only or [] if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="samadapt-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    check = Check(args.device, work.resolve(), args.budget, args.wheels.resolve() if args.wheels else None, args.keep)
    report = check.run(only)
    report["work"] = str(work)
    target = args.json or REPO / "benchmarks" / "results" / ("gpu_check.json" if args.device == "cuda"
                                                             else "gpu_check_cpu.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"report: {target}")
    if not args.keep and args.work is None and report["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
