"""Hybrid Mamba-Attention ("hybrid"): a Mamba-2 stack in which every `attention_every`-th block is causal attention.

Blocks are numbered from 1: with attention_every = 4, blocks 4, 8, ... are `TransformerBlock`s (attention + MLP,
each with its own pre-norm residual) and the others pre-norm Mamba-2 blocks, so a quarter of the depth attends.
The Mamba-2 blocks carry order, so attention may do without rotary positions (`rotary`, as Jamba does).
Both kinds of block are causal, hence the stack is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lvm_pipeline.models.base import family, register_config
from lvm_pipeline.models.mamba2 import Mamba2Config, Mamba2Model
from lvm_pipeline.models.transformer import TransformerBlock


@dataclass
class HybridConfig(Mamba2Config):
    """Mamba-2 blocks (the Mamba2Config fields) with an attention block every `attention_every` blocks."""

    family: str = "hybrid"  # the registered family name
    attention_every: int = 4  # blocks attention_every, 2 * attention_every, ... are attention (1 of every N)
    n_heads: int = 4  # heads of each attention block (d_model must divide by it)
    mlp_ratio: float = 4.0  # hidden width of each attention block's MLP, as a multiple of d_model
    rotary: bool = True  # rotary positions (RoPE) in the attention blocks


@family("hybrid", HybridConfig)
class HybridModel(Mamba2Model):
    """n_layers blocks, block i (from 1) attention where i % attention_every == 0, else Mamba-2 -> final norm."""

    def __init__(self, config: HybridConfig, d_input: int):
        if config.attention_every < 1:
            raise ValueError(f"attention_every must be at least 1, got {config.attention_every}")
        super().__init__(config, d_input)

    def make_block(self, config: HybridConfig, index: int) -> nn.Module:
        if index % config.attention_every == 0:
            return TransformerBlock(config.d_model, config.n_heads, config.dropout, config.rotary, config.mlp_ratio)
        return super().make_block(config, index)


@register_config
def toy_hybrid() -> HybridConfig:
    """Tiny hybrid for tests: a Mamba-2 block, then an attention block."""
    return HybridConfig(d_model=32, n_layers=2, d_state=16, headdim=8, chunk_size=16, attention_every=2, mlp_ratio=2.0)


@register_config
def hybrid_small() -> HybridConfig:
    """Hybrid the demo trains on 2 CPU cores: the Mamba-2 block of `mamba2_small`, then an attention block."""
    return HybridConfig(d_model=256, n_layers=2, dropout=0.0, d_state=64, headdim=64, attention_every=2, n_heads=4)


@register_config
def hybrid_768() -> HybridConfig:
    """Hybrid at width 768: 8 blocks, 4 and 8 attention (12 heads of 64), the rest `mamba_ssm.Mamba2`'s defaults."""
    return HybridConfig(d_model=768, n_layers=8, dropout=0.1, attention_every=4, n_heads=12)
