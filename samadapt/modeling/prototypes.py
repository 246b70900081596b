"""Support-set prototypes and their projection into mask-decoder prompt tokens.

A prototype is the average of the stride-16 image embedding under one class's mask (masked average
pooling). The mask is brought to the feature grid by area averaging, so a feature cell half covered
by the class counts with weight 0.5: thin structures still contribute, and cells straddling an edge
do not dominate. Sums and weights are pooled over all support images before dividing, so a class
that is large in one image and small in another is weighted by area, not by image.

    support embeddings (N,256,h,w) ─┐
    support masks (N,S,S) ─ area ───┴─> weights (N,1+C,h,w) ─> masked mean / k-means
                                                             ─> foreground (C,P,256), background (Pb,256)
    PrototypePrompter: prototypes are centred on their common mean, then for query class c the tokens are
        [own prototypes of c (P) | prototypes of the other classes (P·(C-1)) | background (Pb)]
    each passed through LayerNorm-MLP plus a learned role embedding (own / other / background),
    giving prompt tokens (B, C, T, 256) with T = P·C + Pb: one decoder query per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from samadapt.errors import UserError

# Fraction of a feature cell that must belong to a class for the cell to join that class's k-means.
KMEANS_MIN_COVER = 0.5


@dataclass
class SupportPrototypes:
    """foreground: (C, P, D), P prototypes for each of C classes; background: (Pb, D).

    foreground_position / background_position: the same shapes, the masked mean of the decoder's
    dense positional encoding over the cells each prototype summarises, i.e. *where* the structure
    lies. Appearance alone cannot tell left from right lung; the position term can.
    """

    foreground: torch.Tensor
    background: torch.Tensor
    foreground_position: torch.Tensor | None = None
    background_position: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.foreground.shape[0]

    def to(self, *args, **kwargs) -> "SupportPrototypes":
        def move(t):
            return None if t is None else t.to(*args, **kwargs)

        return SupportPrototypes(move(self.foreground), move(self.background),
                                 move(self.foreground_position), move(self.background_position))

    def as_tensors(self, prefix: str = "prototypes.") -> dict[str, torch.Tensor]:
        names = ("foreground", "background", "foreground_position", "background_position")
        return {prefix + n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "prototypes.") -> "SupportPrototypes":
        def get(name):
            value = tensors.get(prefix + name)
            return None if value is None else value.float()

        return cls(get("foreground"), get("background"), get("foreground_position"), get("background_position"))


def cell_weights(masks: torch.Tensor, valid: torch.Tensor | None, num_classes: int, grid: int) -> torch.Tensor:
    """Soft per-class cover of each feature cell.

    Args:
        masks: (N, S, S) integer index masks, 0 = background, 1..C = classes.
        valid: (N, S, S) bool, False on letterbox padding (never background evidence); None = all valid.
        grid: side h of the feature grid (S/16).
    Returns:
        (N, 1 + C, h, w) float weights in [0, 1]; channel 0 is background.
    """
    onehot = F.one_hot(masks.long().clamp(min=0), num_classes + 1).permute(0, 3, 1, 2).float()
    if valid is not None:
        onehot = onehot * valid[:, None].float()
    return F.adaptive_avg_pool2d(onehot, grid)


def masked_average(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sums and total weights pooled over the batch.

    features (N, D, h, w), weights (N, K, h, w) -> sums (K, D), totals (K,).
    The prototype of k is sums[k] / totals[k]; keeping both lets support sets be merged exactly.
    """
    sums = torch.einsum("ndhw,nkhw->kd", features.float(), weights.float())
    return sums, weights.float().sum(dim=(0, 2, 3))


def weighted_kmeans(vectors: torch.Tensor, weights: torch.Tensor, k: int, iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """k weighted centroids (k, D) of vectors (M, D) with weights (M,), and each vector's cluster (M,).

    Deterministic.

    Seeds by farthest-point traversal from the weighted mean (no randomness, so the same support
    set always gives the same prototypes); with fewer than k distinct vectors, centroids repeat.
    """
    mean = (vectors * weights[:, None]).sum(0) / weights.sum().clamp(min=1e-8)
    if k == 1 or vectors.shape[0] <= 1:
        return mean[None].expand(k, -1).clone(), torch.zeros(vectors.shape[0], dtype=torch.long)
    centres = [vectors[torch.cdist(mean[None], vectors)[0].argmax()]]
    for _ in range(1, k):
        distance = torch.cdist(torch.stack(centres), vectors).min(dim=0).values
        centres.append(vectors[distance.argmax()])
    centres = torch.stack(centres)
    for _ in range(iterations):
        assignment = torch.cdist(vectors, centres).argmin(dim=1)
        member = F.one_hot(assignment, k).float() * weights[:, None]  # (M, k)
        mass = member.sum(0)
        updated = member.t() @ vectors / mass.clamp(min=1e-8)[:, None]
        centres = torch.where(mass[:, None] > 0, updated, centres)  # an empty cluster keeps its seed
    return centres, torch.cdist(vectors, centres).argmin(dim=1)


def compute_prototypes(features: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None, num_classes: int,
                       per_class: int = 1, background: int = 1, class_names: list[str] | None = None,
                       positions: torch.Tensor | None = None) -> SupportPrototypes:
    """Prototypes of a support set.

    Args:
        features: (N, D, h, w) support image embeddings (stride 16).
        masks: (N, S, S) index masks; valid: (N, S, S) bool or None.
        per_class, background: prototypes per class (P) and for the background (Pb); 1 is the
            masked mean, more are weighted k-means centroids of the covered cells.
    Raises `UserError` when a class covers no pixel of the support set.
    """
    weights = cell_weights(masks, valid, num_classes, features.shape[-1])
    sums, totals = masked_average(features, weights)
    names = class_names or [f"class {c}" for c in range(1, num_classes + 1)]
    empty = [names[c - 1] for c in range(1, num_classes + 1) if totals[c] <= 0]
    if empty:
        raise UserError(f"the support set contains no pixel of {', '.join(empty)}")
    vectors = features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    flat_weights = weights.permute(0, 2, 3, 1).reshape(-1, weights.shape[1])
    flat_positions = None
    if positions is not None:
        flat_positions = positions.float().permute(1, 2, 0).reshape(1, -1, positions.shape[0])
        flat_positions = flat_positions.expand(features.shape[0], -1, -1).reshape(-1, positions.shape[0])
    appearance, location = [], []
    for k, count in [(0, background)] + [(c, per_class) for c in range(1, num_classes + 1)]:
        if count == 1:
            chosen = flat_weights[:, k] > 0
            assignment = torch.zeros(int(chosen.sum()), dtype=torch.long)
            appearance.append((sums[k] / totals[k].clamp(min=1e-8))[None])
        else:
            chosen = flat_weights[:, k] >= KMEANS_MIN_COVER
            if not chosen.any():
                chosen = flat_weights[:, k] > 0
            centres, assignment = weighted_kmeans(vectors[chosen], flat_weights[chosen, k], count)
            appearance.append(centres)
        if flat_positions is not None:
            member = F.one_hot(assignment, count).float() * flat_weights[chosen, k][:, None]  # (M, count)
            location.append(member.t() @ flat_positions[chosen] / member.sum(0).clamp(min=1e-8)[:, None])
    return SupportPrototypes(torch.stack(appearance[1:]), appearance[0],
                             torch.stack(location[1:]) if location else None, location[0] if location else None)


class PrototypePrompter(nn.Module):
    """Prototypes -> prompt tokens (B, C, T, D) for the mask decoder (see the module docstring)."""

    ROLE_OWN, ROLE_OTHER, ROLE_BACKGROUND = 0, 1, 2

    def __init__(self, dim: int = 256, hidden: int = 256):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        # Unit-scale role embeddings (like SAM's point-label embeddings): the token sets of two class
        # queries hold the same prototypes, so the roles are what tells the queries apart.
        self.role = nn.Embedding(3, dim)

    def forward(self, prototypes: SupportPrototypes, batch_size: int) -> torch.Tensor:
        foreground, background = prototypes.foreground, prototypes.background
        classes, per_class, dim = foreground.shape
        # Features of one image share a large common component (for SAM2 also `no_mem_embed`);
        # prototypes relative to their own mean keep only what tells the structures apart.
        centre = torch.cat([foreground.reshape(-1, dim), background]).mean(0)
        projected = self.mlp(self.norm(foreground - centre))  # (C, P, D)
        back = self.mlp(self.norm(background - centre))  # (Pb, D)
        if prototypes.foreground_position is not None:
            # As SAM's point tokens: content embedding + positional encoding of where it is.
            projected = projected + prototypes.foreground_position
            back = back + prototypes.background_position
        own = projected + self.role.weight[self.ROLE_OWN]
        other = projected + self.role.weight[self.ROLE_OTHER]
        back = back + self.role.weight[self.ROLE_BACKGROUND]
        rows = []
        for c in range(classes):
            others = torch.cat([other[:c], other[c + 1:]]).reshape(-1, dim)
            rows.append(torch.cat([own[c], others, back]))
        tokens = torch.stack(rows)  # (C, T, D)
        return tokens[None].expand(batch_size, -1, -1, -1)
