"""How every training command ends: the same four lines on stdout, whatever the command.

    status: completed (2/2 epochs, 4 steps, 3.2 s)
    best: val Dice 0.6123 at step 4
    run: runs/ft1
    next: samadapt evaluate --model runs/ft1 --data phantoms --splits splits.json --part test

`pretrain`, `finetune`, `ablate-loss` and `fewshot train` all end with `print_outcome`; the
machine-readable form of the same facts is the run's summary.json (ablation.json for
`ablate-loss`). An interrupted run's next command is the same command with `--resume`. Under
torchrun only rank 0 prints. An interrupted run (Ctrl-C, SIGTERM: the step finished and was saved)
exits with code 130 after its closing lines.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from samadapt.cli import invoked_args
from samadapt.engine.logging import metric_label

STATUS_WORDS = {"completed": "completed", "interrupted": "interrupted", "early_stopping": "stopped early",
                "max_steps": "stopped at the step limit"}
OUTCOME_KEYS = ("status", "best", "run", "next")


def command_line(words: Sequence[str | Path]) -> str:
    """A command as the user would type it (quoted where the shell needs it)."""
    return shlex.join(["samadapt", *(str(w) for w in words)])


def resume_command(resume_flag: bool = True) -> str:
    """The command being run, with `--resume` (and `--devices N` when it runs under torchrun).
    `resume_flag` False: for a command that continues by itself when run again (`ablate-loss`)."""
    args = [a for a in invoked_args() if a != "--debug"]
    if resume_flag and "--resume" not in args:
        args.append("--resume")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and "--devices" not in args:  # a torchrun child no longer sees the --devices it came from
        args += ["--devices", str(world)]
    return command_line(args)


def status_text(summary: Mapping, epochs: int | None = None) -> str:
    """`completed (2/2 epochs, 4 steps, 3.2 s)` from a `Trainer.fit` summary."""
    done = summary.get("epochs_completed")
    parts = [f"{done}/{epochs} epochs" if epochs else f"{done} epochs"] if done is not None else []
    if summary.get("global_step") is not None:
        parts.append(f"{summary['global_step']} steps")
    if summary.get("seconds") is not None:
        parts.append(f"{summary['seconds']:.1f} s")
    word = STATUS_WORDS.get(summary["status"], summary["status"])
    return f"{word} ({', '.join(parts)})" if parts else word


def best_text(summary: Mapping) -> str:
    """The best monitored metric, or the final training loss when nothing was monitored."""
    best = summary.get("best") or {}
    if best.get("value") is not None:
        return f"{metric_label(best['metric'])} {best['value']:.4f} at step {best['step']}"
    loss = (summary.get("last_train") or {}).get("loss")
    return f"final loss {loss:.4g}" if loss is not None else "none (no epoch finished)"


def print_outcome(status: str, best: str, run: str | Path, next_command: str) -> None:
    """The four closing lines of a training command, printed by rank 0 only."""
    if os.environ.get("RANK", "0") != "0":
        return
    for key, value in zip(OUTCOME_KEYS, (status, best, run, next_command)):
        print(f"{key}: {value}", flush=True)


def finish_training(summary: Mapping, run: str | Path, next_words: Sequence[str | Path], *,
                    epochs: int | None = None, best: str | None = None) -> None:
    """`print_outcome` for a `Trainer.fit` summary; `next_words`: the next command when the run finished
    (without the leading `samadapt`); an interrupted run's next command resumes it instead."""
    interrupted = summary["status"] == "interrupted"
    print_outcome(status_text(summary, epochs), best or best_text(summary), run,
                  resume_command() if interrupted else command_line(next_words))
    if interrupted:
        exit_interrupted()


# The shell's code for a command stopped by Ctrl-C (128 + SIGINT), also after a clean stop that saved.
EXIT_INTERRUPTED = 130


def exit_interrupted() -> None:
    """End an interrupted command (its folder saved and marked incomplete) with exit code 130."""
    import typer

    raise typer.Exit(EXIT_INTERRUPTED)
