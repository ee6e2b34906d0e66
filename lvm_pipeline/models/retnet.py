"""RetNet ("retnet", Sun et al. 2023, "Retentive Network"): multi-scale retention in place of attention.

Retention per head h with decay gamma_h = 1 - 2^(-5 - h) (the paper's schedule: head 0 forgets within ~32 steps,
each next head twice as slowly), on queries and keys rotated by their positions (RoPE, optional):
- parallel form (training): O = (Q K^T * D) V with the causal decay mask D[n, m] = gamma^(n-m) for n >= m, else 0;
- recurrent form (inference): S_n = gamma S_{n-1} + k_n^T v_n, o_n = q_n S_n (a state of head_dim x value_dim).
The two are the same function of the same weights; `RetNetConfig.form` picks the one the backbone runs. Each head's
output is GroupNorm-ed, gated by swish(X W_G) and projected back; blocks are pre-LayerNorm retention and
pre-LayerNorm FFN, both residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lvm_pipeline.models.base import ModelConfig, family, register_config
from lvm_pipeline.models.blocks import MixerBlock, MixerStackModel
from lvm_pipeline.models.transformer import RotaryEmbedding

RETENTION_FORMS = ("parallel", "recurrent")


@dataclass
class RetNetConfig(ModelConfig):
    """A stack of RetNet blocks (multi-scale retention + FFN) of width `d_model`, then a final LayerNorm."""

    family: str = "retnet"  # the registered family name
    n_heads: int = 4  # retention heads per block, each with its own decay (d_model must divide by it)
    value_factor: int = 2  # value (and gate) width per block as a multiple of d_model (the paper: 2)
    ffn_ratio: float = 2.0  # hidden width of each block's FFN as a multiple of d_model (the paper: 2 with value_factor 2)
    rotary: bool = True  # rotate queries and keys by their positions (RoPE; the paper's xPos without its scaling)
    form: str = "parallel"  # "parallel" (all positions at once, quadratic) or "recurrent" (a state, one step at a time)


def head_decays(n_heads: int) -> torch.Tensor:
    """gamma_h = 1 - 2^(-5 - h) for heads h = 0..n_heads-1 [n_heads] (exact in float32 up to 19 heads)."""
    return 1 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float32))


def retention_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(Q K^T * D) V: q and k [batch, heads, seq, head_dim], v [batch, heads, seq, value_dim], gamma [heads] ->
    [batch, heads, seq, value_dim]; D[h, n, m] = gamma_h^(n-m) for n >= m, 0 above the diagonal."""
    positions = torch.arange(q.shape[-2], device=q.device)
    distance = positions[:, None] - positions[None, :]  # [n, m]: n - m
    log_gamma = torch.log(gamma.to(torch.promote_types(q.dtype, torch.float32)))  # at least float32 for the powers
    decay = torch.exp(log_gamma[:, None, None] * distance.clamp(min=0)).masked_fill(distance < 0, 0.0)  # [heads, n, m]
    return ((q @ k.mT) * decay) @ v


def retention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """The same retention one step at a time (shapes as `retention_parallel`): S_n = gamma S_{n-1} + k_n^T v_n,
    o_n = q_n S_n, with S_0 = 0 [batch, heads, head_dim, value_dim]."""
    batch, heads, seq, head_dim = q.shape
    state = v.new_zeros(batch, heads, head_dim, v.shape[-1])
    gamma = gamma.to(v.dtype)[:, None, None]
    outputs = []
    for n in range(seq):
        state = gamma * state + k[:, :, n, :, None] * v[:, :, n, None, :]
        outputs.append((q[:, :, n, None, :] @ state).squeeze(-2))
    return torch.stack(outputs, dim=2) if outputs else v.new_zeros(batch, heads, 0, v.shape[-1])


RETENTION_FUNCTIONS = {"parallel": retention_parallel, "recurrent": retention_recurrent}


class MultiScaleRetention(nn.Module):
    """Q, K (rotated), V -> retention per head (decay gamma_h) -> GroupNorm per head -> * swish(X W_G) -> W_O.

    forward(x [batch, seq, d_model], form) -> [batch, seq, d_model]; both forms give the same output."""

    def __init__(self, d_model: int, n_heads: int, value_factor: int = 2, rotary: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        value_width = d_model * value_factor
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, value_width, bias=False)
        self.gate = nn.Linear(d_model, value_width, bias=False)
        self.out = nn.Linear(value_width, d_model, bias=False)
        self.group_norm = nn.GroupNorm(n_heads, value_width)
        self.rotary = RotaryEmbedding(self.head_dim) if rotary else None
        self.register_buffer("gamma", head_decays(n_heads), persistent=False)

    def forward(self, x: torch.Tensor, form: str = "parallel") -> torch.Tensor:
        if form not in RETENTION_FORMS:
            raise ValueError(f"form must be one of {RETENTION_FORMS}, got {form!r}")
        batch, seq, _ = x.shape

        def by_head(t: torch.Tensor) -> torch.Tensor:  # [batch, seq, heads * width] -> [batch, heads, seq, width]
            return t.view(batch, seq, self.n_heads, -1).transpose(1, 2)

        q, k, v = by_head(self.query(x)), by_head(self.key(x)) * self.head_dim**-0.5, by_head(self.value(x))
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        retained = RETENTION_FUNCTIONS[form](q, k, v, self.gamma)  # [batch, heads, seq, value_dim]
        normed = self.group_norm(retained.transpose(1, 2).reshape(batch * seq, -1)).view(batch, seq, -1)
        return self.out(F.silu(self.gate(x)) * normed.to(x.dtype))


@family("retnet", RetNetConfig)
class RetNetModel(MixerStackModel):
    """`n_layers` blocks of retention and a GELU FFN -> final LayerNorm; retention in the form `config.form` names."""

    forms = RETENTION_FORMS

    def make_block(self, config: RetNetConfig) -> MixerBlock:
        hidden = int(round(config.d_model * config.ffn_ratio))
        ffn = nn.Sequential(nn.Linear(config.d_model, hidden), nn.GELU(), nn.Linear(hidden, config.d_model))
        retention = MultiScaleRetention(config.d_model, config.n_heads, config.value_factor, config.rotary)
        return MixerBlock(config.d_model, retention, ffn, config.dropout)


@register_config
def toy_retnet() -> RetNetConfig:
    """Tiny RetNet for tests (4 heads of 8 channels; milliseconds on CPU)."""
    return RetNetConfig(d_model=32, n_layers=2, n_heads=4)


@register_config
def retnet_small() -> RetNetConfig:
    """RetNet the demo trains on 2 CPU cores in about a minute (4 heads of 64; no dropout, as every `_small`)."""
    return RetNetConfig(d_model=256, n_layers=2, n_heads=4, dropout=0.0)


@register_config
def retnet_768() -> RetNetConfig:
    """RetNet at the predecessor's width (768, 12 heads of 64) and depth (6)."""
    return RetNetConfig(d_model=768, n_layers=6, n_heads=12, dropout=0.1)
