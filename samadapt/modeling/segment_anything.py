"""One interface over SAM2 and SAM: encode an image once, decode masks for many prompts.

`SegmentAnything` wraps a transformers `Sam2Model` or `SamModel` (kept as `.hf`, so its weights and
state-dict keys are the transformers ones) and splits it the way SAM is used in practice:

    features = model.encode(pixel_values)            # once per image (the expensive part)
    out = model.decode(features, points=..., ...)    # per prompt set (cheap)

`encode` returns exactly what the official models feed their mask decoder: for SAM2 the stride-16
map plus `no_mem_embed`, and the stride-4/8 maps already projected by the decoder's `conv_s0` /
`conv_s1`; for SAM the ViT neck output. Learned prompts enter `decode` as `prompt_tokens`, sparse
prompt embeddings placed beside (or instead of) the point/box embeddings.

Shapes: B images, S input size, Q queries per image (e.g. one per class), N points per query,
T prompt tokens per query, M masks per query (1, or 3 with `multimask=True`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ImageFeatures:
    """What the mask decoder consumes for a batch of B images of size S×S.

    embedding: (B, 256, S/16, S/16); for SAM2 it already includes `no_mem_embed`.
    high_res: SAM2 only: ((B, 32, S/4, S/4), (B, 64, S/8, S/8)) after `conv_s0` / `conv_s1`;
        None for SAM.
    """

    embedding: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, *args, **kwargs) -> "ImageFeatures":
        high = None if self.high_res is None else tuple(t.to(*args, **kwargs) for t in self.high_res)
        return ImageFeatures(self.embedding.to(*args, **kwargs), high)

    def detach(self) -> "ImageFeatures":
        high = None if self.high_res is None else tuple(t.detach() for t in self.high_res)
        return ImageFeatures(self.embedding.detach(), high)

    def __getitem__(self, index) -> "ImageFeatures":
        """Select images along the batch axis (an int keeps the batch axis: length 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        high = None if self.high_res is None else tuple(t[index] for t in self.high_res)
        return ImageFeatures(self.embedding[index], high)

    @property
    def batch_size(self) -> int:
        return self.embedding.shape[0]

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for caching (e.g. with safetensors); inverse of `from_dict`."""
        out = {"embedding": self.embedding}
        if self.high_res is not None:
            out["high_res_s4"], out["high_res_s8"] = self.high_res
        return out

    @classmethod
    def from_dict(cls, tensors: dict[str, torch.Tensor]) -> "ImageFeatures":
        high = (tensors["high_res_s4"], tensors["high_res_s8"]) if "high_res_s4" in tensors else None
        return cls(tensors["embedding"], high)


@dataclass
class DecoderOutput:
    """logits: (B, Q, M, S/4, S/4) low-resolution mask logits; iou: (B, Q, M) predicted IoU;
    object_score: (B, Q, 1) object-presence logit (SAM2) or None (SAM)."""

    logits: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor | None = None


class SegmentAnything(nn.Module):
    """A SAM2 or SAM model with `encode` / `decode` and handles on its parts.

    Attributes:
        hf: the wrapped transformers `Sam2Model` / `SamModel`.
        name: registry name, e.g. "sam2.1-hiera-tiny".
        family: "sam2" or "sam".
        image_size: S, the square input size the model was built for.
    """

    def __init__(self, hf: nn.Module, *, name: str, family: str, image_size: int):
        super().__init__()
        if family not in ("sam2", "sam"):
            raise ValueError(f"family must be 'sam2' or 'sam', got {family!r}")
        self.hf = hf
        self.name = name
        self.family = family
        self.image_size = int(image_size)

    # ----- parts, for freezing and for pre-training ------------------------------------------
    @property
    def image_encoder(self) -> nn.Module:
        """The image encoder as MAE pre-training trains it and decoder fine-tuning freezes it
        (SAM2: Hiera trunk + FPN neck; SAM: ViT + neck). SAM2's `no_mem_embed` and the decoder's
        `conv_s0`/`conv_s1` are not part of it (they belong to `no_memory_embedding`/`mask_decoder`)."""
        return self.hf.vision_encoder

    @property
    def trunk(self) -> nn.Module:
        """SAM2: the Hiera backbone (stride-4 stem, 4 stages). SAM: the ViT encoder (incl. its neck)."""
        return self.hf.vision_encoder.backbone if self.family == "sam2" else self.hf.vision_encoder

    @property
    def neck(self) -> nn.Module:
        return self.hf.vision_encoder.neck

    @property
    def prompt_encoder(self) -> nn.Module:
        return self.hf.prompt_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        return self.hf.mask_decoder

    @property
    def embedding_size(self) -> int:
        """Side of the stride-16 image embedding: S/16."""
        return self.image_size // 16

    @property
    def feature_dim(self) -> int:
        """Channels of the image embedding and of prompt tokens (256)."""
        return self.hf.config.mask_decoder_config.hidden_size

    def extra_repr(self) -> str:
        return f"name={self.name!r}, family={self.family!r}, image_size={self.image_size}"

    # ----- encoder ----------------------------------------------------------------------------
    def encode(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Image features as the official model feeds them to its mask decoder.

        Args:
            pixel_values: (B, 3, S, S) normalised images (see `samadapt.data.preprocess`).
        Returns:
            `ImageFeatures` with embedding (B, 256, S/16, S/16) and, for SAM2, high_res
            ((B, 32, S/4, S/4), (B, 64, S/8, S/8)).
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[-2:]) != (
            self.image_size,
            self.image_size,
        ):
            raise ValueError(
                f"{self.name} expects pixel values of shape (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(pixel_values.shape)}"
            )
        if self.family == "sam":
            embedding = self.hf.vision_encoder(pixel_values).last_hidden_state
            return ImageFeatures(embedding, None)
        # fpn_hidden_states are ordered stride 4, 8, 16 (high to low resolution)
        s4, s8, s16 = self.hf.vision_encoder(pixel_values).fpn_hidden_states
        decoder = self.hf.mask_decoder
        embedding = s16 + self.hf.no_memory_embedding.reshape(1, -1, 1, 1)
        return ImageFeatures(embedding, (decoder.conv_s0(s4), decoder.conv_s1(s8)))

    # ----- decoder ----------------------------------------------------------------------------
    def dense_positional_encoding(self, batch_size: int = 1) -> torch.Tensor:
        """(batch_size, 256, S/16, S/16) positional encoding of the embedding grid."""
        return self.hf.get_image_wide_positional_embeddings().expand(batch_size, -1, -1, -1)

    def no_mask_embedding(self, batch_size: int = 1) -> torch.Tensor:
        """(batch_size, 256, S/16, S/16): the dense prompt used when no mask prompt is given."""
        side = self.embedding_size
        weight = self.hf.prompt_encoder.no_mask_embed.weight
        return weight.reshape(1, -1, 1, 1).expand(batch_size, -1, side, side)

    def embed_prompts(
        self,
        batch_size: int,
        *,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        prompt_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Sparse prompt embeddings (B, Q, T', 256), or None (SAM with no prompt at all).

        Point/box tokens come first (as the official prompt encoder builds them, including its
        "not a point" padding token), then `prompt_tokens`.
        """
        encoder = self.hf.prompt_encoder
        if points is not None and point_labels is None:
            point_labels = torch.ones(points.shape[:-1], dtype=torch.long, device=points.device)
        if points is None and boxes is None and prompt_tokens is None and self.family == "sam2":
            # What SAM2 does with no prompt: a single padding point (label -1).
            points = torch.zeros(batch_size, 1, 1, 2, device=encoder.no_mask_embed.weight.device)
            point_labels = -torch.ones(batch_size, 1, 1, dtype=torch.long, device=points.device)
        parts = []
        if points is not None:
            parts.append(encoder._embed_points(points.float(), point_labels.long(), pad=boxes is None))
        if boxes is not None:
            parts.append(encoder._embed_boxes(boxes.float()))
        if prompt_tokens is not None:
            parts.append(prompt_tokens)
        if not parts:
            return None
        queries = {p.shape[:2] for p in parts}
        if len(queries) != 1:
            raise ValueError(f"points, boxes and prompt_tokens disagree on (B, Q): {sorted(queries)}")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def decode(
        self,
        features: ImageFeatures,
        *,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        prompt_tokens: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> DecoderOutput:
        """Masks for Q queries per image.

        Args:
            features: from `encode` (or a cache of it), batch B.
            points: (B, Q, N, 2) x, y pixel coordinates on the S×S model input.
            point_labels: (B, Q, N): 1 foreground, 0 background, -1 padding; default all 1.
            boxes: (B, Q, 4) x0, y0, x1, y1 pixel coordinates on the S×S input.
            prompt_tokens: (B, Q, T, 256) sparse prompt embeddings used as-is (learned class
                prompts, few-shot prototypes); gradients flow through them.
            multimask: True returns the 3 multi-mask outputs (M = 3); False returns one mask
                (M = 1), chosen as the official model does (SAM2 in eval mode falls back to the
                best multi-mask output when the single mask is unstable).
        With no prompt at all, Q = 1 and the result equals the official model's unprompted output.

        Returns:
            `DecoderOutput`: logits (B, Q, M, S/4, S/4), iou (B, Q, M), object_score (B, Q, 1) or None.
        """
        embedding = features.embedding
        batch, side = embedding.shape[0], embedding.shape[-1]
        if side != self.embedding_size:
            raise ValueError(
                f"features are {side}×{side} but {self.name} at {self.image_size} px expects "
                f"{self.embedding_size}×{self.embedding_size}"
            )
        sparse = self.embed_prompts(
            batch, points=points, point_labels=point_labels, boxes=boxes, prompt_tokens=prompt_tokens
        )
        if sparse is not None:
            sparse = sparse.to(embedding.dtype)
        dense = self.no_mask_embedding(batch).to(embedding.dtype)
        position = self.dense_positional_encoding(batch).to(embedding.dtype)
        if self.family == "sam":
            logits, iou = self.hf.mask_decoder(
                image_embeddings=embedding,
                image_positional_embeddings=position,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            return DecoderOutput(logits, iou, None)
        logits, iou, _tokens, object_score = self.hf.mask_decoder(
            image_embeddings=embedding,
            image_positional_embeddings=position,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=list(features.high_res),
        )
        return DecoderOutput(logits, iou, object_score)

    def forward(self, pixel_values: torch.Tensor, **prompts) -> DecoderOutput:
        """`decode(encode(pixel_values), **prompts)`; see `decode` for the prompt arguments."""
        return self.decode(self.encode(pixel_values), **prompts)
