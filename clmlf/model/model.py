"""The CLMLF model, top to bottom (REFERENCE.md section 1).

    text  --TextEncoder-->  T [B, Lt, Ht] --Linear+GELU-->  T' [B, Lt, d]
    image --ImageEncoder--> F [B, C, 7, 7] --permute, flatten--> 49 patch tokens --Linear+GELU-->
                            pooled [B, C] --its own Linear+GELU--> 1 global token
          [global; patches] (50 tokens) --image Transformer (TE_I)--> I [B, 50, d]
    concat(T', I) --fusion Transformer (TE_M, text padding masked)--> F [B, Lt+50, d]
    masked attention pooling --> R [B, d] --Dropout, Linear(d, d/2), GELU, Linear--> logits

Posts without an image (``image_present`` False) get their 50 image tokens
zeroed and masked out of the fusion attention and of the pooling, so their
logits depend on the text alone, whatever the pixel tensor holds. A batch with
no image at all skips the image encoder and fuses the text tokens alone. A model
whose config says ``trained_with_images: false`` treats every post as imageless:
its image path never learned anything, so no image may change its output. The two
projection heads ``proj_original`` / ``proj_augmented`` feed the contrastive
losses (:mod:`clmlf.model.losses`); they are not used for classification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmlf.model.config import ModelConfig
from clmlf.model.encoders import (
    EncoderError,
    ImageEncoder,
    TextEncoder,
    create_image_encoder,
    create_text_encoder,
)


@dataclass
class ModelOutput:
    """``logits`` [B, n_labels]; ``fused`` = pooled representation R [B, d];
    ``attentions`` = one [B, heads, L, L] tensor per fusion layer (only when requested),
    where positions are the ``num_text_tokens`` text tokens, then the global image
    token, then the image patches in row-major order (L = text tokens only when no
    post of the batch has an image)."""

    logits: Tensor
    fused: Tensor
    attentions: tuple[Tensor, ...] | None = None
    num_text_tokens: int = 0


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask; returns its weights on request."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        assert dim % num_heads == 0, (dim, num_heads)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, keep: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``keep`` [B, L] bool: True for keys that may be attended to (None: all)."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=2)
        q, k, v = (t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        mask = None if keep is None else keep[:, None, None, :]  # [B, 1, 1, L], broadcast over heads/queries
        drop = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, drop, self.training) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(batch, length, dim)
        return self.out(y), weights


class TransformerLayer(nn.Module):
    """A vanilla post-LayerNorm (BERT-style) encoder layer: attention, add & norm, 4d GELU FF, add & norm."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention = SelfAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attention(x, keep, need_weights)
        x = self.norm1(x + self.drop(attended))
        x = self.norm2(x + self.drop(self.feed_forward(x)))
        return x, weights


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads, dropout) for _ in range(num_layers))

    def forward(self, x: Tensor, keep: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, keep, need_weights)
            if weights is not None:
                attentions.append(weights)
        return x, attentions


class AttentionPooling(nn.Module):
    """R = sum_i softmax_i(score_i) f_i with score = Linear(d/2 -> 1)(GELU(Linear(d -> d/2)(f))), masked."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, 1))

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        scores = self.score(x).squeeze(-1).masked_fill(~keep, float("-inf"))
        weights = scores.softmax(dim=-1)
        return (weights.unsqueeze(-1) * x).sum(dim=1)


def masked_mean(x: Tensor, keep: Tensor) -> Tensor:
    weights = keep.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class ProjectionHead(nn.Module):
    """Linear(d, d) -> GELU -> Linear(d, d); not normalised (the contrastive losses use raw dot products)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CLMLF(nn.Module):
    """Text encoder + image encoder + Multi-Layer Fusion + attention pooling + classifier."""

    def __init__(
        self,
        config: ModelConfig,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
    ):
        super().__init__()
        self.config = config
        d, heads = config.fusion_dim, config.num_heads
        self.text_encoder = text_encoder if text_encoder is not None else create_text_encoder(config)
        self.image_encoder = image_encoder if image_encoder is not None else create_image_encoder(config)
        positions = getattr(getattr(self.text_encoder.backbone, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and config.max_text_len > positions:
            # Checked here, not at the first long post: the forward pass would fail mid-run.
            raise EncoderError(
                f"max_text_len {config.max_text_len} is more than the text encoder's {positions} positions"
            )
        channels = self.image_encoder.out_channels

        self.text_proj = nn.Sequential(nn.Linear(self.text_encoder.hidden_size, d), nn.GELU())
        self.patch_proj = nn.Sequential(nn.Linear(channels, d), nn.GELU())
        self.global_proj = nn.Sequential(nn.Linear(channels, d), nn.GELU())
        self.image_transformer = TransformerEncoder(d, heads, config.image_layers, config.dropout)
        self.fusion_transformer = TransformerEncoder(d, heads, config.fusion_layers, config.dropout)
        self.pooling = AttentionPooling(d) if config.pooling == "attention" else None
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(d, d // 2),
            nn.GELU(),
            nn.Linear(d // 2, config.num_labels),
        )
        self.proj_original = ProjectionHead(d)
        self.proj_augmented = ProjectionHead(d)

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """Pixels [N, 3, H, W] -> image tokens [N, 1 + h*w, d] after the image transformer."""
        feature_map, pooled = self.image_encoder(pixel_values)
        patches = feature_map.permute(0, 2, 3, 1).flatten(1, 2)  # [N, h*w, C]: one token per position
        tokens = torch.cat([self.global_proj(pooled).unsqueeze(1), self.patch_proj(patches)], dim=1)
        tokens, _ = self.image_transformer(tokens)
        return tokens

    def _image_tokens(self, pixel_values: Tensor, image_present: Tensor) -> Tensor:
        """Image tokens [B, 1 + h*w, d]; rows without an image are exact zeros and the encoder never sees them."""
        if bool(image_present.all()):
            return self.encode_image(pixel_values)
        encoded = self.encode_image(pixel_values[image_present])
        tokens = encoded.new_zeros(image_present.shape[0], encoded.shape[1], encoded.shape[2])
        tokens[image_present] = encoded
        return tokens

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor | None,
        image_present: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        return_attentions: bool = False,
    ) -> ModelOutput:
        batch, num_text = input_ids.shape
        if not self.config.trained_with_images:
            pixel_values, image_present = None, None  # text-only model: images are ignored, whatever is passed
        if image_present is None:
            image_present = torch.full((batch,), pixel_values is not None, dtype=torch.bool, device=input_ids.device)
        image_present = image_present.to(device=input_ids.device, dtype=torch.bool)

        text = self.text_proj(self.text_encoder(input_ids, attention_mask, token_type_ids))
        keep = attention_mask.to(torch.bool)
        tokens = text
        if pixel_values is not None and bool(image_present.any()):
            # Rows without an image get exact zeros (their pixels are never read), masked out below.
            image = self._image_tokens(pixel_values, image_present).to(text.dtype)
            tokens = torch.cat([text, image], dim=1)  # [B, Lt + 50, d]
            keep = torch.cat([keep, image_present[:, None].expand(batch, image.shape[1])], dim=1)
        # else: no image in the whole batch. The 50 image slots would all be masked, and a masked
        # key gets exactly zero weight, so fusing the text tokens alone is the same function, cheaper.

        fused_tokens, attentions = self.fusion_transformer(tokens, keep, return_attentions)
        if self.pooling is not None:
            fused = self.pooling(fused_tokens, keep)
        elif self.config.pooling == "mean":
            fused = masked_mean(fused_tokens, keep)
        elif self.config.pooling == "text":
            fused = masked_mean(fused_tokens[:, :num_text], keep[:, :num_text])
        else:  # "cls": the first text token
            fused = fused_tokens[:, 0]
        logits = self.classifier(fused)
        return ModelOutput(
            logits=logits,
            fused=fused,
            attentions=tuple(attentions) if return_attentions else None,
            num_text_tokens=num_text,
        )

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part: ``text_encoder``, ``image_encoder``, ``fusion`` (everything else)."""
        groups: dict[str, list[nn.Parameter]] = {"text_encoder": [], "image_encoder": [], "fusion": []}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            part = name.split(".", 1)[0]
            groups[part if part in ("text_encoder", "image_encoder") else "fusion"].append(param)
        return groups
