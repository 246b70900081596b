"""Segmentation losses on multi-label logits, and named combinations of them for the command line.

Every loss takes
    logits  (B, C, *spatial)  raw scores, one independent sigmoid channel per foreground class
                              (binary segmentation is C = 1); *spatial is (H, W) or (D, H, W)
    target  (B, C, *spatial)  one-hot / multi-hot targets in {0, 1} (soft labels in [0, 1] also work)
    valid   (B, *spatial)     optional, 1 where a pixel is real and 0 where it is padding
and returns a scalar. Padded pixels contribute nothing: region losses (Dice, Tversky) zero both the
probability and the target there, so they add to neither overlap nor size; pixel losses (BCE, focal)
average over valid pixels only.

The region losses delegate to MONAI (`DiceLoss`, `TverskyLoss`) and the focal term to MONAI's
`FocalLoss`; BCE uses torch's `binary_cross_entropy_with_logits` because MONAI has no weighted BCE.
Focal-Tversky is MONAI's per-(sample, class) Tversky loss raised to a power, as MONAI has no such loss.

Combinations are written as `dice+bce`, `0.9*dice+0.1*bce` or `tversky(alpha=0.2,beta=0.8)`; see
`parse_loss`. `LOSS_PRESETS` names the combinations compared in the loss ablation.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from samadapt.errors import UserError

# Smoothing of 1 (in pixels) keeps region losses informative on images without foreground: with a
# tiny epsilon, an all-background target makes the loss ~1 for any prediction that is not exactly 0.
DEFAULT_SMOOTH = 1.0


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> None:
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from logits {tuple(logits.shape)}")
    if valid is not None and (valid.shape[0] != logits.shape[0] or valid.shape[1:] != logits.shape[2:]):
        raise ValueError(f"valid must be (B, *spatial) = {(logits.shape[0], *logits.shape[2:])}, got {tuple(valid.shape)}")


def _masked_probabilities(logits, target, valid):
    """Sigmoid probabilities and targets with padded pixels set to 0 in both (shapes unchanged)."""
    probs = torch.sigmoid(logits)
    target = target.to(probs.dtype)
    if valid is None:
        return probs, target
    keep = valid.to(probs.dtype).unsqueeze(1)
    return probs * keep, target * keep


def _masked_pixel_mean(per_pixel: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of a (B, C, *spatial) loss map over valid pixels and all classes."""
    if valid is None:
        return per_pixel.mean()
    keep = valid.to(per_pixel.dtype).unsqueeze(1).expand_as(per_pixel)
    # An all-padding batch gives 0 (with a gradient path) rather than 0 / 0.
    return (per_pixel * keep).sum() / keep.sum().clamp(min=1.0)


class SoftDiceLoss(nn.Module):
    """1 - soft Dice per (sample, class), averaged; `batch=True` pools the batch before the ratio."""

    def __init__(self, smooth: float = DEFAULT_SMOOTH, batch: bool = False):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=False, smooth_nr=smooth, smooth_dr=smooth, batch=batch, reduction="mean")

    def forward(self, logits, target, valid=None):
        _check_shapes(logits, target, valid)
        return self.dice(*_masked_probabilities(logits, target, valid))


class WeightedBCELoss(nn.Module):
    """Binary cross-entropy per pixel and class; `pos_weight` > 1 up-weights foreground pixels."""

    def __init__(self, pos_weight: float = 1.0):
        super().__init__()
        self.pos_weight = float(pos_weight)

    def forward(self, logits, target, valid=None):
        _check_shapes(logits, target, valid)
        weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        per_pixel = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=weight, reduction="none")
        return _masked_pixel_mean(per_pixel, valid)


class SigmoidFocalLoss(nn.Module):
    """Focal loss -a_t (1 - p_t)^gamma log p_t per pixel; `alpha` weights positives (None = no weighting)."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None):
        super().__init__()
        from monai.losses import FocalLoss

        self.focal = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False, reduction="none")

    def forward(self, logits, target, valid=None):
        _check_shapes(logits, target, valid)
        return _masked_pixel_mean(self.focal(logits, target.to(logits.dtype)), valid)


class SoftTverskyLoss(nn.Module):
    """1 - Tversky index TP / (TP + alpha FP + beta FN) per (sample, class), averaged.

    The default alpha=0.3, beta=0.7 penalises missed foreground more than false alarms, which suits
    small structures; alpha = beta = 0.5 is soft Dice.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = DEFAULT_SMOOTH, batch: bool = False):
        super().__init__()
        from monai.losses import TverskyLoss

        self.tversky = TverskyLoss(
            sigmoid=False, alpha=alpha, beta=beta, smooth_nr=smooth, smooth_dr=smooth, batch=batch, reduction="none"
        )

    def per_class(self, logits, target, valid=None) -> torch.Tensor:
        """1 - Tversky index, shape (B, C) (or (C,) with `batch=True`)."""
        _check_shapes(logits, target, valid)
        loss = self.tversky(*_masked_probabilities(logits, target, valid))
        return loss.reshape(loss.shape[: 1 if loss.ndim == 1 else 2])

    def forward(self, logits, target, valid=None):
        return self.per_class(logits, target, valid).mean()


class FocalTverskyLoss(nn.Module):
    """(1 - Tversky index)^gamma per (sample, class), averaged.

    gamma < 1 (default 0.75) boosts the gradient of classes that are already nearly right relative
    to a plain Tversky loss. The base is clamped away from 0 because d/dx x^gamma is infinite at 0
    for gamma < 1, which would turn a perfect prediction into NaN gradients.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, smooth: float = DEFAULT_SMOOTH):
        super().__init__()
        self.tversky = SoftTverskyLoss(alpha=alpha, beta=beta, smooth=smooth)
        self.gamma = float(gamma)

    def forward(self, logits, target, valid=None):
        return self.tversky.per_class(logits, target, valid).clamp(min=1e-6).pow(self.gamma).mean()


# name -> (class, allowed keyword parameters)
LOSS_TERMS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "dice": (SoftDiceLoss, ("smooth", "batch")),
    "bce": (WeightedBCELoss, ("pos_weight",)),
    "focal": (SigmoidFocalLoss, ("gamma", "alpha")),
    "tversky": (SoftTverskyLoss, ("alpha", "beta", "smooth", "batch")),
    "focal_tversky": (FocalTverskyLoss, ("alpha", "beta", "gamma", "smooth")),
}

# The loss ablation: preset name -> combination spec accepted by `parse_loss`.
LOSS_PRESETS: dict[str, str] = {
    "dice": "dice",
    "bce": "bce",
    "dice+bce": "dice+bce",
    "focal": "focal",
    "tversky": "tversky",
    "focal-tversky": "focal_tversky",
}


class CombinedLoss(nn.Module):
    """Weighted sum of named loss terms; `components` gives each unweighted term for logging."""

    def __init__(self, terms: list[tuple[float, str, nn.Module]], spec: str = ""):
        super().__init__()
        if not terms:
            raise ValueError("a combined loss needs at least one term")
        self.weights = [float(w) for w, _, _ in terms]
        self.names = [name for _, name, _ in terms]
        self.terms = nn.ModuleList([module for _, _, module in terms])
        self.spec = spec or "+".join(f"{w:g}*{n}" for w, n in zip(self.weights, self.names))

    def components(self, logits, target, valid=None) -> dict[str, torch.Tensor]:
        return {name: term(logits, target, valid) for name, term in zip(self.names, self.terms)}

    def forward(self, logits, target, valid=None):
        values = self.components(logits, target, valid)
        return sum(w * values[name] for w, name in zip(self.weights, self.names))

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"


_TERM_PATTERN = re.compile(
    r"^\s*(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?"
    r"(?P<name>[A-Za-z_][A-Za-z_-]*)\s*(?:\((?P<params>[^()]*)\))?\s*$"
)


def _split_top_level(spec: str) -> list[str]:
    """Split on '+' outside parentheses (so `focal(gamma=1e+0)` stays whole)."""
    parts, depth, current = [], 0, ""
    for index, char in enumerate(spec):
        depth += (char == "(") - (char == ")")
        exponent_sign = char == "+" and index > 0 and spec[index - 1] in "eE" and current[-2:-1].isdigit()
        if char == "+" and depth == 0 and not exponent_sign:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _parse_value(text: str, where: str):
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"loss '{where}': value {text!r} is not a number") from None


def parse_loss(spec: str) -> CombinedLoss:
    """Build a loss from a spec such as `0.9*dice+0.1*bce` or `focal_tversky(gamma=0.5)+bce(pos_weight=3)`.

    Terms are joined with '+', each optionally prefixed by a non-negative weight `w*` (default 1)
    and followed by keyword parameters in parentheses. Names may use '-' or '_' (`focal-tversky`).
    A preset name from `LOSS_PRESETS` is accepted as a spec. Bad specs raise `UserError`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"empty loss spec; valid terms: {', '.join(LOSS_TERMS)}")
    spec = LOSS_PRESETS.get(spec.strip(), spec.strip())
    terms: list[tuple[float, str, nn.Module]] = []
    for part in _split_top_level(spec):
        match = _TERM_PATTERN.match(part)
        if match is None:
            raise UserError(f"cannot parse loss term {part.strip()!r} in {spec!r}; expected e.g. '0.5*dice' or 'focal(gamma=2)'")
        name = match["name"].lower().replace("-", "_")
        if name not in LOSS_TERMS:
            raise UserError(f"unknown loss term {match['name']!r} in {spec!r}; valid terms: {', '.join(LOSS_TERMS)}")
        if name in {n for _, n, _ in terms}:
            raise UserError(f"loss term {name!r} appears twice in {spec!r}; merge the weights")
        weight = float(match["weight"]) if match["weight"] else 1.0
        cls, allowed = LOSS_TERMS[name]
        kwargs = {}
        for item in filter(None, (p.strip() for p in (match["params"] or "").split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in allowed:
                raise UserError(f"loss term {name!r}: unknown parameter {item!r}; valid: {', '.join(allowed)}")
            kwargs[key] = _parse_value(value, name)
        try:
            terms.append((weight, name, cls(**kwargs)))
        except (TypeError, ValueError) as exc:
            raise UserError(f"loss term {name!r}: bad parameters {kwargs} ({exc})") from None
    if all(w == 0 for w, _, _ in terms):
        raise UserError(f"loss {spec!r}: all weights are zero")
    return CombinedLoss(terms, spec=spec)
