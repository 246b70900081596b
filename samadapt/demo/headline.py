"""The demo's headline numbers: (what, value, note) rows shared by the console summary and the report."""

from __future__ import annotations

from samadapt.demo.pipeline import RUN_LABELS


def headline(results: dict) -> list[tuple[str, str, str]]:
    """The rows of the final table, in order: each fine-tuned run, the paired comparisons, the few-shot sweeps."""
    rows = []
    for label in RUN_LABELS:
        dice = results["evaluation"][label]["summary"]["mean_over_classes"]["dice"]
        rows.append((f"fine-tuned, {label}: test Dice", _fmt(dice["mean"]), f"± {_fmt(dice['sd'])} over {dice['n']} cases"))
    for what, comparison in (("all test cases", results["compare"]),
                             ("cases with a reference", results["compare"].get("with_reference"))):
        if not comparison:
            continue
        mean_row = next(r for r in comparison["comparisons"] if r["class"] == "mean over classes")
        rows.append((f"MAE init − random init (Dice), {what}", _fmt(mean_row["mean_difference"], signed=True),
                     f"95% CI [{_fmt(mean_row['ci_low'], signed=True)}, {_fmt(mean_row['ci_high'], signed=True)}], "
                     f"Wilcoxon p {_fmt_p(mean_row['wilcoxon_p'])}, {mean_row['n_pairs']} cases"))
    for sweep in results["fewshot"]["sweeps"]:
        for row in sweep.get("rows", []):
            rows.append((f"few-shot, {sweep['label']}, {row['shots']} shot(s): Dice", _fmt(row["dice"]["mean"]),
                         f"{row['n_scored']} unseen {'volumes' if sweep['dims'] == '3d' else 'images'}"))
    return rows


def _fmt(value, signed: bool = False) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _fmt_p(value) -> str:
    """A p-value as a reader expects it: "< 0.001" rather than a rounded-down 0.000."""
    if value is not None and value == value and value < 0.001:
        return "< 0.001"
    return _fmt(value)
