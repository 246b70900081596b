"""`samadapt data check`: statistics and problems of a dataset, every problem naming its file.

Errors (exit code 2) are problems that would make training or evaluation wrong or fail: unreadable
files, images without masks in a labelled dataset, masks without images, missing structure masks,
image/mask size or (3D) geometry mismatches, label values outside the class list.

Warnings are legitimate in real data but worth knowing: a mask with no foreground at all (a healthy
case, or a class absent from that image), structures that overlap (folders layout: the later class
wins), a class that never occurs in any mask, images of differing sizes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from samadapt.data.dataset import Case, Dataset
from samadapt.data.io import read_image
from samadapt.data.volumes import read_volume
from samadapt.data.masks import decode_mask
from samadapt.errors import UserError


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    path: Path | None
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}" if self.path else f"{self.severity}: {self.message}"


@dataclass
class CheckReport:
    name: str
    cases: int = 0
    labeled: int = 0
    patients: int = 0
    sizes: Counter = field(default_factory=Counter)  # spatial shape -> count
    channels: Counter = field(default_factory=Counter)  # channels (1 for grey / volumes) -> count
    dtypes: Counter = field(default_factory=Counter)
    class_pixels: dict = field(default_factory=dict)  # class name -> foreground voxels
    class_cases: dict = field(default_factory=dict)  # class name -> cases containing it
    class_components: dict = field(default_factory=dict)  # class name -> connected regions (all cases)
    overlaps: list = field(default_factory=list)  # (mask file, overlapping pixels), folders layout
    total_pixels: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def class_fraction(self, name: str) -> float:
        return self.class_pixels.get(name, 0) / self.total_pixels if self.total_pixels else 0.0


def _image_info(case: Case) -> tuple[tuple[int, ...], int, str, object]:
    """(spatial shape, channels, dtype, affine or None) of a case's image."""
    if case.dims == "3d":
        volume = read_volume(case.image)
        return volume.shape, 1, str(volume.data.dtype), volume.affine
    image = read_image(case.image)
    return image.shape[:2], (image.shape[2] if image.ndim == 3 else 1), str(image.dtype), None


def _check_case(case: Case, report: CheckReport, expect_mask: bool) -> None:
    add = report.findings.append
    try:
        shape, channels, dtype, affine = _image_info(case)
    except UserError as exc:
        add(Finding("error", case.image, str(exc).replace(f"{case.image}: ", "")))
        return
    report.sizes[shape] += 1
    report.channels[channels] += 1
    report.dtypes[dtype] += 1
    if case.fov is not None:
        try:
            if read_image(case.fov).shape[:2] != shape:
                add(Finding("error", case.fov, f"field-of-view mask size differs from image {shape}"))
        except UserError as exc:
            add(Finding("error", case.fov, str(exc).replace(f"{case.fov}: ", "")))
    if not expect_mask:
        return
    if not case.labeled:
        add(Finding("error", case.image, "image has no mask"))
        return
    report.labeled += 1
    layout = case.layout
    if layout.kind == "folders":
        for info, path in zip(layout.classes, case.masks):
            if path is None:
                add(Finding("error", case.image, f"no {info.name!r} mask in {info.folder}/"))
    try:
        decoded = decode_mask(case.masks, layout)
    except UserError as exc:
        add(Finding("error", case.mask, str(exc).replace(f"{case.mask}: ", "")))
        return
    mask = decoded.mask
    if mask.shape != shape:
        add(Finding("error", case.mask, f"mask size {mask.shape} differs from image size {shape} ({case.image.name})"))
    if affine is not None:
        label_affine = read_volume(case.mask).affine
        if not np.allclose(label_affine, affine, atol=1e-3):
            add(Finding("error", case.mask, "label volume geometry (affine) differs from its image"))
    if decoded.unknown_values:
        shown = ", ".join(str(v) for v in decoded.unknown_values[:8])
        add(Finding("error", case.mask, f"label values outside the class list: {shown}"))
    if decoded.overlap_pixels:
        report.overlaps.append((case.mask.parent.parent / case.mask.name, decoded.overlap_pixels))
    counts = np.bincount(mask.ravel(), minlength=len(layout.classes) + 1)
    report.total_pixels += int(mask.size)
    for index, info in enumerate(layout.classes, start=1):
        report.class_pixels[info.name] = report.class_pixels.get(info.name, 0) + int(counts[index])
        report.class_cases[info.name] = report.class_cases.get(info.name, 0) + int(counts[index] > 0)
        if counts[index] and mask.ndim == 2:  # regions per class tell large areas from scattered patches
            regions = ndimage.label(mask == index)[1]
            report.class_components[info.name] = report.class_components.get(info.name, 0) + regions
    if counts[1:].sum() == 0:
        add(Finding("warning", case.mask, "mask is empty (no foreground)"))


def require_readable(cases: list[Case], masks: bool = True) -> None:
    """The checks of `samadapt data check` on `cases`, run by every command before any work: decode
    each image (and, with `masks`, its mask, strictly) and raise the first error `data check` would
    report (sizes, geometry, label values, missing structure masks, ...) as a `UserError` naming its
    file, with the same words. A dataset `data check` accepts never fails later for one of these."""
    for case in cases:
        case.load_image()
        if masks and case.labeled:
            case.load_mask()
        report = CheckReport(case.id)
        _check_case(case, report, expect_mask=masks and case.labeled)
        if report.errors:
            first = report.errors[0]
            raise UserError(first.message, first.path)


def check_dataset(dataset: Dataset, progress=None) -> CheckReport:
    """Inspect every case; `progress(i, n)` is called after each case when given."""
    report = CheckReport(dataset.name, cases=len(dataset.cases), patients=len(dataset.patients()))
    expect_mask = dataset.spec.labeled
    for info in dataset.spec.layout.classes if expect_mask else ():
        report.class_pixels[info.name] = 0
        report.class_cases[info.name] = 0
    for i, case in enumerate(dataset.cases):
        _check_case(case, report, expect_mask)
        if progress:
            progress(i + 1, len(dataset.cases))
    if report.overlaps:
        # Anatomical structures may overlap legitimately (clavicles over lungs): one summary line.
        files = ", ".join(p.name for p, _ in report.overlaps[:5]) + (" ..." if len(report.overlaps) > 5 else "")
        mean = sum(n for _, n in report.overlaps) / len(report.overlaps)
        report.findings.append(Finding("warning", dataset.spec.masks, f"structures overlap in {len(report.overlaps)} "
                                       f"cases (mean {mean:.0f} pixels; the later class wins): {files}"))
    for path in dataset.orphan_masks:
        report.findings.append(Finding("error", path, "mask has no image"))
    for name, cases in report.class_cases.items():
        if cases == 0 and report.labeled:
            report.findings.append(Finding("warning", dataset.spec.masks, f"class {name!r} never occurs in any mask"))
    if len(report.sizes) > 1:
        shown = ", ".join(f"{'x'.join(map(str, s))} ({n})" for s, n in report.sizes.most_common(5))
        report.findings.append(Finding("warning", dataset.spec.images, f"images differ in size: {shown}"))
    return report


def report_table(report: CheckReport):
    """A rich Table summarising the report."""
    from rich.table import Table

    def fmt(counter: Counter) -> str:
        return ", ".join(f"{'x'.join(map(str, k)) if isinstance(k, tuple) else k} ({n})" for k, n in counter.most_common(4))

    table = Table(title=f"dataset {report.name}", show_header=True)
    table.add_column("item")
    table.add_column("value", overflow="fold")
    table.add_row("cases / labelled / patients", f"{report.cases} / {report.labeled} / {report.patients}")
    table.add_row("sizes", fmt(report.sizes))
    table.add_row("channels", fmt(report.channels))
    table.add_row("dtypes", fmt(report.dtypes))
    for name in report.class_pixels:
        regions = report.class_components.get(name)
        per_case = f", {regions / max(1, report.class_cases[name]):.1f} regions per case" if regions else ""
        table.add_row(f"class {name}", f"{100 * report.class_fraction(name):.3f}% of pixels, "
                      f"in {report.class_cases[name]} cases{per_case}")
    table.add_row("errors / warnings", f"{len(report.errors)} / {len(report.warnings)}")
    return table
