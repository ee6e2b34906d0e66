"""Memory-augmented GRU family ("memory_gru"): a stacked GRU controller with an external slot memory.

At every step t, with M [batch, n_slots, slot_dim] the memory left by step t-1 and h the controller's
top hidden state from step t-1 (an NTM/DNC-lite with content addressing only):

  READ   q = W_q h;  w_r = softmax(M q / sqrt(slot_dim));  r = w_r M                 [batch, slot_dim]
  STEP   the stacked GRU cells take [x_t, r] (layer 1) and each layer below's new state (layers 2..n)
  WRITE  k = W_k h';  w_w = softmax(M k / sqrt(slot_dim));  e = sigmoid(W_e h');  a = tanh(W_a h')
         M <- M * (1 - w_w e^T) + w_w a^T                                              (h' the new top state)
  OUTPUT LayerNorm(W_o [h', r])                                                       [batch, d_model]

The memory starts at a learned [n_slots, slot_dim] parameter, expanded per batch. Causal by construction.

Cost: the recurrence is a Python loop over seq * n_layers GRU-cell calls (no fused kernel), each
O(batch * d_model^2 + batch * n_slots * slot_dim); backward keeps every step's memory, i.e.
O(batch * seq * n_slots * slot_dim) activations. Expect it several times slower than nn.GRU of the same
size on CPU, and dominated by per-step overhead on GPU; keep sequences short (tens of positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lvm_pipeline.models.base import ModelConfig, NextConceptModel, family, register_config


@dataclass
class MemoryGRUConfig(ModelConfig):
    """A stacked GRU controller (`n_layers` cells of width `d_model`) reading and writing a slot memory."""

    family: str = "memory_gru"  # the registered family name
    n_slots: int = 16  # memory slots (rows of the memory matrix)
    slot_dim: int = 64  # width of each slot, of the read vector, and of the read/write keys


class SlotMemory(nn.Module):
    """Content-based read and erase/add write over a [batch, n_slots, slot_dim] memory, keyed by a controller state.

    One projection of a controller state gives the write key, erase and add of its step and the read query of the
    next step (both come from the same state), so a step costs one matrix product for all four.
    """

    def __init__(self, d_controller: int, n_slots: int, slot_dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(slot_dim)
        self.initial = nn.Parameter(torch.randn(n_slots, slot_dim) * 0.1)  # learned initial memory (random: breaks slot symmetry)
        self.keys = nn.Linear(d_controller, 4 * slot_dim)  # -> read query, write key, erase, add

    def initial_memory(self, batch: int) -> torch.Tensor:
        return self.initial.unsqueeze(0).expand(batch, -1, -1)

    def project(self, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(read query, write key, erase, add) from a controller state, each [b, slot_dim]."""
        return self.keys(state).chunk(4, dim=-1)

    def address(self, memory: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Softmax over slots of scaled dot products: memory [b, n, s], key [b, s] -> weights [b, n]."""
        return torch.softmax(torch.einsum("bns,bs->bn", memory, key) * self.scale, dim=-1)

    def read(self, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """The attention-weighted sum of the slots `query` addresses: [b, slot_dim]."""
        return torch.einsum("bn,bns->bs", self.address(memory, query), memory)

    def write(self, memory: torch.Tensor, key: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
        """The memory after an erase/add update at the slots `key` addresses."""
        weights = self.address(memory, key).unsqueeze(-1)  # [b, n, 1]
        erase, add = torch.sigmoid(erase).unsqueeze(1), torch.tanh(add).unsqueeze(1)  # [b, 1, s]
        return memory * (1 - weights * erase) + weights * add


@family("memory_gru", MemoryGRUConfig)
class MemoryGRUModel(NextConceptModel):
    """Stacked GRU cells stepping through the sequence, reading from and writing to a `SlotMemory` at each step."""

    def __init__(self, config: MemoryGRUConfig, d_input: int):
        super().__init__(config, d_input)
        d_model, slot_dim = config.d_model, config.slot_dim
        self.memory = SlotMemory(d_model, config.n_slots, slot_dim)
        self.cells = nn.ModuleList(
            nn.GRUCell(d_model + slot_dim if layer == 0 else d_model, d_model) for layer in range(config.n_layers)
        )
        self.between_layers = nn.Dropout(config.dropout)
        self.readout = nn.Linear(d_model + slot_dim, d_model)
        self.norm = nn.LayerNorm(d_model)

    def backbone(self, h: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = h.shape
        memory = self.memory.initial_memory(batch)
        states = [h.new_zeros(batch, d_model) for _ in self.cells]
        query = self.memory.project(states[-1])[0]
        tops, reads = [], []
        for t in range(seq):
            read = self.memory.read(memory, query)
            layer_input = torch.cat((h[:, t], read), dim=-1)
            for layer, cell in enumerate(self.cells):
                if layer:
                    layer_input = self.between_layers(layer_input)
                states[layer] = layer_input = cell(layer_input, states[layer])
            query, key, erase, add = self.memory.project(states[-1])
            memory = self.memory.write(memory, key, erase, add)
            tops.append(states[-1])
            reads.append(read)
        # the readout of every step at once: one matrix product instead of one per step
        return self.norm(self.readout(torch.cat((torch.stack(tops, dim=1), torch.stack(reads, dim=1)), dim=-1)))


@register_config
def toy_memory_gru() -> MemoryGRUConfig:
    """Tiny memory GRU for tests (milliseconds on CPU)."""
    return MemoryGRUConfig(d_model=24, n_layers=1, n_slots=4, slot_dim=8)


@register_config
def memory_gru_small() -> MemoryGRUConfig:
    """Memory GRU the demo trains on 2 CPU cores in about a minute (sequential: keep windows short)."""
    return MemoryGRUConfig(d_model=256, n_layers=2, n_slots=16, slot_dim=64, dropout=0.0)


@register_config
def memory_gru_768() -> MemoryGRUConfig:
    """Memory GRU at the predecessor's width (768) and depth (6), with a 64 x 128 memory."""
    return MemoryGRUConfig(d_model=768, n_layers=6, n_slots=64, slot_dim=128, dropout=0.1)
