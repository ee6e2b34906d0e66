"""What the token-mixing families (rwkv, retnet) share: a pre-norm block of a mixer and a feed-forward sub-layer,
and a model that stacks such blocks, each mixer run in the form (`recurrent` / `parallel`) its config names."""

from __future__ import annotations

import torch
from torch import nn

from lvm_pipeline.models.base import ModelConfig, NextConceptModel


class MixerBlock(nn.Module):
    """x + mixer(norm(x), form), then x + ffn(norm(x)); dropout on both branches in training."""

    def __init__(self, d_model: int, mixer: nn.Module, ffn: nn.Module, dropout: float):
        super().__init__()
        self.mixer_norm, self.mixer = nn.LayerNorm(d_model), mixer
        self.ffn_norm, self.ffn = nn.LayerNorm(d_model), ffn
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, form: str) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.mixer_norm(x), form))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class MixerStackModel(NextConceptModel):
    """`n_layers` blocks of `make_block` -> final LayerNorm; `config.form` (one of `forms`) says how mixers run."""

    forms: tuple[str, ...]

    def __init__(self, config: ModelConfig, d_input: int):
        if config.form not in self.forms:
            raise ValueError(f"form must be one of {self.forms}, got {config.form!r}")
        super().__init__(config, d_input)
        self.blocks = nn.ModuleList(self.make_block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)

    def make_block(self, config: ModelConfig) -> MixerBlock:
        raise NotImplementedError

    def backbone(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, self.config.form)
        return self.norm(h)
