"""Causal pre-norm Transformer family ("transformer") and its reusable `TransformerBlock`.

Causality comes from `scaled_dot_product_attention(..., is_causal=True)`: query t attends to keys <= t
only, so right padding never reaches real positions and no padding mask is needed. Positions are either a
learned embedding added to the inputs (at most `max_len` positions) or rotary embeddings (RoPE) applied to
queries and keys inside every attention layer (no length limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lvm_pipeline.models.base import ModelConfig, NextConceptModel, family, register_config

POSITION_KINDS = ("learned", "rotary")


@dataclass
class TransformerConfig(ModelConfig):
    """A causal pre-norm Transformer; `n_layers` blocks of width `d_model`."""

    family: str = "transformer"  # the registered family name
    n_heads: int = 4  # attention heads per block (d_model must divide by it; rotary needs an even head size)
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, as a multiple of d_model
    positions: str = "rotary"  # "learned" (embedding added to the inputs) or "rotary" (RoPE on queries and keys)
    max_len: int = 1024  # longest sequence the learned position embedding covers (unused with rotary)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """RoPE: rotates pairs of channels (i, i + head_dim/2) of queries and keys by position-dependent angles."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {head_dim}")
        inverse_frequencies = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inverse_frequencies", inverse_frequencies, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k [batch, heads, seq, head_dim] -> the same, rotated by their positions 0..seq-1."""
        positions = torch.arange(q.shape[-2], device=q.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inverse_frequencies)  # [seq, head_dim/2]
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (fused QKV projection, optional RoPE, SDPA with is_causal=True)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, rotary: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.head_dim, self.dropout = n_heads, d_model // n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim) if rotary else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(batch, seq, d_model))


class TransformerBlock(nn.Module):
    """One causal pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).

    Args: d_model (width), n_heads (attention heads; d_model must divide by it), dropout (on attention
    weights and on both residual branches, only in training), rotary (RoPE on queries and keys; positions
    count from 0 in every call), mlp_ratio (MLP hidden width / d_model).
    forward: x [batch, seq, d_model] -> [batch, seq, d_model]; position t uses positions <= t only.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, rotary: bool = True, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(round(d_model * mlp_ratio))
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, rotary)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.residual_dropout(self.attn(self.attn_norm(x)))
        return x + self.residual_dropout(self.mlp(self.mlp_norm(x)))


@family("transformer", TransformerConfig)
class TransformerModel(NextConceptModel):
    """(+ learned positions) -> `n_layers` TransformerBlocks -> final LayerNorm."""

    def __init__(self, config: TransformerConfig, d_input: int):
        if config.positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {config.positions!r}")
        super().__init__(config, d_input)
        rotary = config.positions == "rotary"
        self.position_embedding = None if rotary else nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.n_heads, config.dropout, rotary, config.mlp_ratio)
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)

    def backbone(self, h: torch.Tensor) -> torch.Tensor:
        if self.position_embedding is not None:
            seq = h.shape[1]
            if seq > self.config.max_len:
                raise ValueError(f"sequence of {seq} positions is longer than max_len {self.config.max_len}")
            h = h + self.position_embedding(torch.arange(seq, device=h.device))
        for block in self.blocks:
            h = block(h)
        return self.norm(h)


@register_config
def toy_transformer() -> TransformerConfig:
    """Tiny Transformer for tests (milliseconds on CPU)."""
    return TransformerConfig(d_model=32, n_layers=2, n_heads=4, mlp_ratio=2.0, max_len=64)


@register_config
def transformer_small() -> TransformerConfig:
    """Transformer the demo trains on 2 CPU cores in about a minute."""
    return TransformerConfig(d_model=256, n_layers=2, n_heads=4, dropout=0.0)


@register_config
def transformer_768() -> TransformerConfig:
    """Transformer at the predecessor's width (768, 12 heads of 64) and depth (6)."""
    return TransformerConfig(d_model=768, n_layers=6, n_heads=12, dropout=0.1)
