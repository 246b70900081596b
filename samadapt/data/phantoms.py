"""Synthetic phantoms: the embedded default data, with exact masks and no download.

``fa``: fluorescein-angiography-like frames. A circular field of view, choroidal background
texture, a dark macula, a bright optic disc with a vessel tree growing from it (branches thin with
depth), vignetting and noise; and *leakage lesions*, small hyperfluorescent patches with fuzzy
borders, none / sparse / dense per eye. The mask of a lesion is the set of pixels where its own
brightness profile is above half its peak, so it is exact by construction. Each "patient" has two
frames (early and late phase, same eye): leakage grows and brightens in the late frame, as in FA.

``anatomy``: few-shot material. Three organ-like structures with a consistent layout (two lobes and
a central body) under random shift, rotation, scale and smooth shape deformation; 2D images or 3D
NIfTI volumes.

All randomness comes from ``numpy.random.default_rng([seed, kind, index])``, so a run is
reproducible byte for byte and independent of how many images are requested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

FA_CLASSES = ("leakage",)
ANATOMY_CLASSES = ("left_lobe", "right_lobe", "core")
FRAMES_PER_PATIENT = 2
LESION_EDGE = 0.1  # width of a lesion's soft edge, in units of its radius
_STREAMS = {"fa": 1, "anatomy": 2, "fa-unlabeled": 3, "anatomy-unlabeled": 4}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) smooth random field, roughly unit std, with about `cells` blobs across."""
    coarse = rng.standard_normal((cells + 3, cells + 3))
    field = ndimage.zoom(coarse, size / cells, order=3, mode="nearest", grid_mode=True)
    return field[:size, :size].astype(np.float32)


def _vessel_segments(rng: np.random.Generator, size: int, disc: np.ndarray) -> list[tuple]:
    """Line segments (x0, y0, x1, y1, width, depth) of a vessel tree rooted at the optic disc."""
    step = size * 0.02
    segments = []
    toward_macula = 0.0 if disc[0] < size / 2 else np.pi
    trunks = [toward_macula + s * rng.uniform(0.5, 0.9) for s in (-1, 1)]  # the temporal arcades
    trunks += [toward_macula + np.pi + rng.uniform(-0.9, 0.9) for _ in range(rng.integers(2, 4))]
    stack = [(disc[0], disc[1], angle, size * rng.uniform(0.011, 0.015), 0, size * rng.uniform(0.45, 0.7))
             for angle in trunks]
    while stack and len(segments) < 900:
        x, y, angle, width, depth, length = stack.pop()
        curve = rng.uniform(-0.03, 0.03)  # arcades bend gently around the macula
        for _ in range(max(1, int(length / step))):
            angle += curve + rng.normal(0.0, 0.12)
            nx, ny = x + step * np.cos(angle), y + step * np.sin(angle)
            segments.append((x, y, nx, ny, width, depth))
            x, y = nx, ny
            width *= 0.985
            if depth < 4 and rng.random() < 0.12:
                side = 1 if rng.random() < 0.5 else -1
                stack.append((x, y, angle + side * rng.uniform(0.4, 1.1), width * 0.72, depth + 1, length * 0.55))
    return segments


def _draw_vessels(segments: list[tuple], size: int) -> np.ndarray:
    canvas = Image.new("F", (size, size), 0.0)
    draw = ImageDraw.Draw(canvas)
    # Thin (deep) branches first so the trunks they leave from are drawn over them.
    for x0, y0, x1, y1, width, depth in sorted(segments, key=lambda s: -s[5]):
        draw.line((x0, y0, x1, y1), fill=float(1.0 - 0.12 * depth), width=max(1, int(round(width))))
    return ndimage.gaussian_filter(np.asarray(canvas, dtype=np.float32), 0.8)


def _blob(rng: np.random.Generator, radius: float) -> tuple[np.ndarray, callable]:
    """Irregular star-shaped blob: returns harmonic coefficients and r(θ) in pixels."""
    k = np.arange(2, 5)
    amp = rng.uniform(0.0, 0.18, size=k.size)
    phase = rng.uniform(0, 2 * np.pi, size=k.size)

    def r_of(theta):
        return radius * (1.0 + (amp[:, None] * np.cos(k[:, None] * theta.ravel()[None] + phase[:, None])).sum(0)).reshape(theta.shape)

    return amp, r_of


def _fa_eye(rng: np.random.Generator, size: int) -> dict:
    """Everything shared by the frames of one eye."""
    fov_r = size * 0.47
    centre = np.array([size / 2, size / 2])
    side = rng.choice([-1, 1])
    disc = centre + np.array([side * size * rng.uniform(0.18, 0.24), size * rng.normal(0.0, 0.03)])
    macula = disc + np.array([-side * size * rng.uniform(0.26, 0.3), size * rng.normal(0.0, 0.02)])
    burden = rng.choice(["none", "sparse", "dense"], p=[0.15, 0.55, 0.3])
    count = {"none": 0, "sparse": int(rng.integers(1, 4)), "dense": int(rng.integers(5, 13))}[burden]
    lesions = []
    while len(lesions) < count:
        point = centre + rng.uniform(-1, 1, 2) * fov_r * 0.8
        if np.linalg.norm(point - centre) > fov_r * 0.82 or np.linalg.norm(point - disc) < size * 0.09:
            continue
        # equivalent radius 1.1-4.4 % of the width: the 10th-90th percentile of the small, scattered
        # lesions of the real FA masks (485 components in ../shared/data/ffa/labeled, value 2)
        radius = size * rng.uniform(0.011, 0.044)
        lesions.append((point, radius, _blob(rng, radius)[1], rng.uniform(0.3, 0.45)))
    return {
        "fov_r": fov_r, "centre": centre, "disc": disc, "macula": macula, "lesions": lesions,
        "vessels": _draw_vessels(_vessel_segments(rng, size, disc), size),
        "texture": 0.6 * _smooth_noise(rng, size, 10) + 0.4 * _smooth_noise(rng, size, 40),
        "base": rng.uniform(0.22, 0.32),
    }


def render_fa_frame(eye: dict, rng: np.random.Generator, size: int, late: bool) -> tuple[np.ndarray, np.ndarray]:
    """One frame of an eye. Returns image (size, size) uint8 and mask (size, size) uint8 {0, 1}."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2_centre = (xx - eye["centre"][0]) ** 2 + (yy - eye["centre"][1]) ** 2
    image = eye["base"] + 0.05 * eye["texture"]
    image += 0.05 * rng.standard_normal((size, size)).astype(np.float32) * 0.4  # capillary grain
    dx, dy = xx - eye["macula"][0], yy - eye["macula"][1]
    image -= 0.12 * np.exp(-(dx**2 + dy**2) / (2 * (size * 0.06) ** 2))  # dark avascular macula
    dx, dy = xx - eye["disc"][0], yy - eye["disc"][1]
    image += 0.45 * np.exp(-((dx**2 + dy**2) / (2 * (size * 0.035) ** 2)) ** 1.5)  # bright disc, soft rim
    image += (0.42 if not late else 0.32) * eye["vessels"]

    mask = np.zeros((size, size), dtype=np.uint8)
    grow, gain = (1.15, 1.2) if late else (1.0, 0.85)
    for point, radius, r_of, amplitude in eye["lesions"]:
        reach = int(np.ceil(radius * grow * 1.9)) + 2
        x0, x1 = max(0, int(point[0]) - reach), min(size, int(point[0]) + reach + 1)
        y0, y1 = max(0, int(point[1]) - reach), min(size, int(point[1]) + reach + 1)
        ly, lx = yy[y0:y1, x0:x1] - point[1], xx[y0:y1, x0:x1] - point[0]
        rho = np.hypot(lx, ly) / (r_of(np.arctan2(ly, lx)) * grow)
        # soft border, 0.5 exactly at rho = 1 (the mask's edge); the width keeps the edge visible
        # within a pixel or two at 256 px, so the mask is learnable from the image
        profile = 1.0 / (1.0 + np.exp((rho - 1.0) / LESION_EDGE))
        image[y0:y1, x0:x1] += amplitude * gain * profile / (1.0 / (1.0 + np.exp(-1.0 / LESION_EDGE)))
        mask[y0:y1, x0:x1] |= (rho < 1.0).astype(np.uint8)

    image *= 1.0 - 0.35 * r2_centre / eye["fov_r"] ** 2  # vignetting
    fov = np.clip((eye["fov_r"] - np.sqrt(r2_centre)) / 2.0 + 0.5, 0.0, 1.0)  # soft 2 px edge
    image = image * fov + 0.012 * rng.standard_normal((size, size)).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    mask[fov < 0.5] = 0
    return (image * 255 + 0.5).astype(np.uint8), mask


def _deformed_inside(coords: np.ndarray, centre, axes, angle: float, rng) -> np.ndarray:
    """Signed inside-ness (>0 inside) of a rotated ellipse(oid) with a wobbly boundary.

    coords: (..., n) pixel coordinates; centre, axes: (n,); rotation acts on the first two axes."""
    local = coords - np.asarray(centre, dtype=np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = c * local[..., 0] + s * local[..., 1]
    v = -s * local[..., 0] + c * local[..., 1]
    parts = [u / axes[0], v / axes[1]] + [local[..., i] / axes[i] for i in range(2, local.shape[-1])]
    rho = np.sqrt(sum(p**2 for p in parts))
    theta = np.arctan2(v, u)
    wobble = 1.0 + sum(rng.uniform(0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    return wobble - rho


def render_anatomy(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) or (H, W, D) image uint8 and index mask uint8 (0 bg, 1 left_lobe, 2 right_lobe, 3 core)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = np.stack([grids[1], grids[0], *grids[2:]], axis=-1)  # (x, y[, z]) order
    h, w = shape[0], shape[1]
    shift = rng.normal(0, 0.02, 2) * np.array([w, h])
    scale = rng.uniform(0.92, 1.08)
    tilt = rng.normal(0, 0.06)
    layout = [  # (centre x, centre y, semi-axis x, semi-axis y, angle, intensity), fractions of the size
        (0.30, 0.48, 0.14, 0.30, 0.08, 0.22),
        (0.70, 0.48, 0.14, 0.30, -0.08, 0.22),
        (0.52, 0.62, 0.15, 0.13, 0.3, 0.78),
    ]
    image = 0.5 + 0.05 * _smooth_noise(rng, max(shape[:2]), 8)[:h, :w]
    if len(shape) == 3:
        image = np.repeat(image[..., None], shape[2], axis=-1)
    mask = np.zeros(shape, dtype=np.uint8)
    for index, (cx, cy, ax, ay, angle, level) in enumerate(layout, start=1):
        centre = [cx * w + shift[0], cy * h + shift[1]] + [n / 2 for n in shape[2:]]
        axes = np.array([ax * w, ay * h] + [n * 0.32 for n in shape[2:]]) * scale * rng.uniform(0.93, 1.07, len(shape))
        inside = _deformed_inside(coords, centre, axes, angle + tilt + rng.normal(0, 0.05), rng) > 0
        mask[inside] = index
        image[inside] = level + 0.03 * rng.standard_normal()
    image = ndimage.gaussian_filter(image, 1.2) + 0.025 * rng.standard_normal(shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def fa_phantom_frames(seed: int, index: int, size: int, stream: str = "fa") -> list[tuple[np.ndarray, np.ndarray]]:
    """The frames (early, late) of phantom eye number `index`: [(image, mask), ...]."""
    rng = np.random.default_rng([seed, _STREAMS[stream], index])
    eye = _fa_eye(rng, size)
    return [render_fa_frame(eye, rng, size, late=bool(f)) for f in range(FRAMES_PER_PATIENT)]


def _description(kind: str, dims: str, n_classes: tuple[str, ...]) -> dict:
    out = {"name": f"phantom-{kind}", "modality": "fa" if kind == "fa" else ("mri" if dims == "3d" else "xray"),
           "dims": dims, "images": "images", "masks": "masks", "mask_layout": "nifti" if dims == "3d" else "index",
           "classes": [{"name": name, "value": i} for i, name in enumerate(n_classes, start=1)]}
    if kind == "fa":
        out["patient_regex"] = "^(?P<patient>[^-]+)-"
    if dims == "3d":
        out["slice_axis"] = 2
    return out


def generate_phantoms(out: str | Path, n: int = 200, size: int = 512, seed: int = 0, kind: str = "fa",
                      unlabeled: int = 0, dims: str = "2d", depth: int | None = None) -> Path:
    """Write `n` labelled phantoms (+ `unlabeled` image-only ones) and a description into `out`.

    Layout: images/, masks/ (same file names), unlabeled/, dataset.yaml, classes.json. FA files are
    `P<eye>-<frame>.png` (two frames per eye), anatomy files `A<index>.png` or `.nii.gz` (3D,
    shape (size, size, depth), depth defaulting to size // 2). Returns the description path.
    """
    import yaml

    from samadapt.data.io import png_bytes
    from samadapt.data.volumes import Volume, volume_to_bytes
    from samadapt.engine.atomic import staged_dir
    from samadapt.errors import UserError

    if kind not in ("fa", "anatomy"):
        raise UserError(f"--kind must be 'fa' or 'anatomy', got {kind!r}")
    if dims not in ("2d", "3d") or (kind == "fa" and dims == "3d"):
        raise UserError(f"--dims {dims!r} is not available for kind {kind!r} (fa is 2d; anatomy is 2d or 3d)")
    if n < 1 or unlabeled < 0:
        raise UserError(f"--n must be at least 1 and --unlabeled at least 0 (got {n}, {unlabeled})")
    if not 32 <= size <= 4096:
        raise UserError(f"--size must be between 32 and 4096, got {size}")
    classes = FA_CLASSES if kind == "fa" else ANATOMY_CLASSES
    shape = (size, size) if dims == "2d" else (size, size, depth or max(8, size // 2))

    def labelled(stream: str, count: int):
        """Yield (name, image, mask) for `count` items of a stream."""
        if kind == "fa":
            eye = 0
            while count > 0:
                for frame, (image, mask) in enumerate(fa_phantom_frames(seed, eye, size, stream)[:count], start=1):
                    yield f"P{eye + 1:04d}-{frame}", image, mask
                    count -= 1
                eye += 1
        else:
            for i in range(count):
                image, mask = render_anatomy(np.random.default_rng([seed, _STREAMS[stream], i]), shape)
                yield f"A{i + 1:04d}", image, mask

    def encode(array: np.ndarray, is_mask: bool) -> bytes:
        if dims == "2d":
            return png_bytes(array)
        return volume_to_bytes(Volume(array, np.eye(4), None), gz=True)

    suffix = ".png" if dims == "2d" else ".nii.gz"
    out = Path(out)
    with staged_dir(out) as stage:
        for sub in ("images", "masks") + (("unlabeled",) if unlabeled else ()):
            (stage / sub).mkdir()
        for name, image, mask in labelled(kind, n):
            (stage / "images" / f"{name}{suffix}").write_bytes(encode(image, False))
            (stage / "masks" / f"{name}{suffix}").write_bytes(encode(mask, True))
        for name, image, _ in labelled(f"{kind}-unlabeled", unlabeled):
            (stage / "unlabeled" / f"U{name}{suffix}").write_bytes(encode(image, False))
        names = {"0": "background", **{str(i): c for i, c in enumerate(classes, start=1)}}
        (stage / "classes.json").write_text(json.dumps(names, indent=1) + "\n")
        (stage / "dataset.yaml").write_text(yaml.safe_dump(_description(kind, dims, classes), sort_keys=False))
    return out / "dataset.yaml"


def save_montage(dataset_dir: str | Path, out_png: str | Path, count: int = 6, tile: int = 256) -> None:
    """Montage of the first `count` phantoms: image on top, image with mask outline in red below."""
    from samadapt.data.io import read_image, write_image_png

    folder = Path(dataset_dir)
    names = sorted(p.name for p in (folder / "images").glob("*.png"))[:count]
    columns = []
    for name in names:
        image = np.asarray(Image.fromarray(read_image(folder / "images" / name)).resize((tile, tile), Image.BILINEAR))
        mask = np.asarray(Image.fromarray(read_image(folder / "masks" / name)).resize((tile, tile), Image.NEAREST))
        rgb = np.repeat(image[..., None], 3, axis=-1)
        edge = (mask > 0) & ~ndimage.binary_erosion(mask > 0)
        overlay = rgb.copy()
        overlay[ndimage.binary_dilation(edge)] = (255, 40, 40)
        columns.append(np.concatenate([rgb, overlay], axis=0))
    write_image_png(out_png, np.concatenate(columns, axis=1))
