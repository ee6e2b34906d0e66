"""TMD mixture-of-experts family ("tmd_moe"): the stacked GRU of `recurrent.GRUModel`, then 16 expert MLPs, one per
TMD domain (the predecessor's "16 TMD specialist experts").

At each position a learned gate (Linear d_model -> 16 on the GRU's output h) gives router probabilities; the two
likeliest experts run, weighted by their probabilities renormalised over the two, and their weighted sum is added to
h before the output projection: out = h + sum_k w_k expert_k(h). Only the chosen experts compute (a gather per
expert). The routing of position t reads h_t (and the TMD at t) only, so the model stays causal.

Load balance (Switch/GShard): n_experts * sum_i f_i * P_i, f_i the share of the batch's 2 x positions assignments that
went to expert i, P_i the mean of the full softmax's probability of i; it is 1 for a uniform router (every P_i =
1 / n_experts, whatever the tie-breaking does to f) and n_experts / 2, its maximum, when one expert takes all the
probability. (With P the mean of the renormalised top-2 weights instead, a uniform router would score up to 8: its
ties send every position to the same two experts. 1 is not a strict lower bound: near-tied routers whose assignments
anti-correlate with their mean probabilities can score a little under it.)
Training adds `balance_weight` times it (`auxiliary_loss`). Batches are right-padded with zero vectors the backbone
cannot tell from concepts (the interface passes no mask), so padded positions are counted too.

With `lane_router` (needs `tmd`) the router also reads the TMD lane: each position's domain is decoded exactly from its
TMD vector (least squares through the code projection's pseudo-inverse, then the signs are the code bits) and a
learned scale times one-hot(domain) is added to the gate logits, so at first expert i is preferred for domain i.
A zero TMD vector (unknown code, padding) adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from lvm_pipeline.models.base import family, register_config
from lvm_pipeline.models.recurrent import PREDECESSOR_SIZE, SMALL_SIZE, TOY_SIZE, GRUConfig, GRUModel
from lvm_pipeline.tmd.schema import _PROJECTION, CODE_BITS, DOMAINS, UNKNOWN

N_EXPERTS = len(DOMAINS)  # one expert per TMD domain
TOP_K = 2  # experts run per position
DOMAIN_BITS = slice(11, 15)  # the domain's 4 bits among the 15 code bits (code bits 12..15; bit 0 is not coded)
assert 2 ** (DOMAIN_BITS.stop - DOMAIN_BITS.start) == N_EXPERTS and DOMAIN_BITS.stop == CODE_BITS
_UNPROJECTION = np.linalg.pinv(_PROJECTION).astype(np.float32)  # [16, 15]: TMD vector -> code-bit signs (scaled)


@dataclass
class TMDMoEConfig(GRUConfig):
    """A stacked GRU (`d_model`, `n_layers`, `dropout` as the GRU's) followed by 16 top-2-routed expert MLPs."""

    family: str = "tmd_moe"  # the registered family name
    expert_hidden: int = 256  # hidden width of each expert MLP (d_model -> expert_hidden -> d_model)
    balance_weight: float = 0.01  # weight of the load-balancing loss in training (0: none)
    lane_router: bool = False  # the router also reads the TMD domain (needs tmd): expert i starts preferred for domain i
    lane_bias: float = 4.0  # initial scale of the lane's one-hot bias on the gate logits (learned)


class Routing(NamedTuple):
    """Where a batch's positions go: the leading dimensions are the positions' ([batch, seq])."""

    experts: torch.Tensor  # [..., 2] int64: the two chosen experts, the likelier first
    weights: torch.Tensor  # [..., 2]: their probabilities renormalised over the two (positive, summing to 1)
    probabilities: torch.Tensor  # [..., 16]: the router's softmax over every expert


def decode_domains(tmd: torch.Tensor) -> torch.Tensor:
    """[..., 16] TMD vectors (`schema.tmd_vectors`) -> [...] int64 domains; UNKNOWN (-1) for a zero vector.

    A vector is the unit-normalised signs of the 15 code bits times the rank-15 projection, so the pseudo-inverse gives
    the signs back up to a positive scale."""
    signs = tmd @ torch.as_tensor(_UNPROJECTION, dtype=tmd.dtype, device=tmd.device)
    bits = (signs > 0).long()[..., DOMAIN_BITS]  # [..., 4], the lowest domain bit first
    domains = (bits << torch.arange(bits.shape[-1], device=tmd.device)).sum(-1)
    return torch.where((tmd != 0).any(-1), domains, UNKNOWN)


def balance_loss(routing: Routing) -> torch.Tensor:
    """n_experts * sum_i f_i * P_i over every position of `routing` (f_i: share of the assignments to expert i, not
    differentiable; P_i: mean router probability of i). 1 for a uniform router, up to n_experts / 2 for a collapsed
    one."""
    assignments = nn.functional.one_hot(routing.experts.reshape(-1), N_EXPERTS).to(routing.probabilities.dtype)
    share = assignments.mean(0)
    mean_probability = routing.probabilities.reshape(-1, N_EXPERTS).mean(0)
    return N_EXPERTS * (share * mean_probability).sum()


class Expert(nn.Sequential):
    """d_model -> hidden -> d_model MLP (GELU)."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))


@family("tmd_moe", TMDMoEConfig)
class TMDMoEModel(GRUModel):
    """GRUModel whose backbone output h becomes h + the top-2 mixture of 16 experts of h."""

    def __init__(self, config: TMDMoEConfig, d_input: int):
        if config.lane_router and not config.tmd:
            raise ValueError("lane_router reads the TMD vector: set tmd=True too")
        super().__init__(config, d_input)
        self.gate = nn.Linear(config.d_model, N_EXPERTS)
        self.experts = nn.ModuleList(Expert(config.d_model, config.expert_hidden) for _ in range(N_EXPERTS))
        self.lane_scale = nn.Parameter(torch.tensor(float(config.lane_bias))) if config.lane_router else None
        self._balance: torch.Tensor | None = None  # balance_weight * balance_loss of the last training forward

    def features(self, x: torch.Tensor, tmd: torch.Tensor | None = None,
                 view: torch.Tensor | None = None) -> torch.Tensor:
        """The GRU's output h plus the top-2 mixture of experts of h, routed on h (and the raw TMD)."""
        shared = super().features(x, tmd, view)
        routing = self.route(shared, tmd)
        weight = self.config.balance_weight
        self._balance = weight * balance_loss(routing) if self.training and weight > 0 else None
        return shared + self.mixture(shared, routing)

    def route(self, shared: torch.Tensor, tmd: torch.Tensor | None = None) -> Routing:
        """The routing of the GRU's output [batch, seq, d_model] (+ the TMD, read with lane_router)."""
        logits = self.gate(shared)
        if self.lane_scale is not None and tmd is not None:
            domains = decode_domains(tmd if tmd.dim() == 3 else tmd[:, None, :])  # [batch, seq or 1]
            lane = domains[..., None] == torch.arange(N_EXPERTS, device=shared.device)  # UNKNOWN matches none
            logits = logits + self.lane_scale * lane.to(logits.dtype)
        probabilities = logits.softmax(-1)
        top, experts = probabilities.topk(TOP_K, dim=-1)
        return Routing(experts, top / top.sum(-1, keepdim=True), probabilities)

    def mixture(self, shared: torch.Tensor, routing: Routing) -> torch.Tensor:
        """sum_k w_k expert_k(h) at each position; each expert runs only on the positions routed to it."""
        flat = shared.reshape(-1, shared.shape[-1])
        experts, weights = routing.experts.reshape(-1, TOP_K), routing.weights.reshape(-1, TOP_K)
        mixed = torch.zeros_like(flat)
        for index, expert in enumerate(self.experts):
            rows, slots = torch.nonzero(experts == index, as_tuple=True)
            mixed = mixed.index_add(0, rows, weights[rows, slots, None] * expert(flat[rows]))
        return mixed.reshape(shared.shape)

    def routing(self, x: torch.Tensor, tmd: torch.Tensor | None = None, view: torch.Tensor | None = None) -> Routing:
        """Each position's two experts and weights for a batch, as forward routes them (e.g. for a per-lane report)."""
        return self.route(super().features(x, tmd, view), tmd)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """balance_weight * the last forward's balance loss (None in eval mode or with balance_weight 0)."""
        return self._balance if self.training else None


@register_config
def toy_tmd_moe() -> TMDMoEConfig:
    """Tiny TMD MoE for tests (the toy GRU and 16-wide experts)."""
    return TMDMoEConfig(**TOY_SIZE, expert_hidden=16)


@register_config
def tmd_moe_small() -> TMDMoEConfig:
    """gru_small's backbone with 16 experts of hidden width 256."""
    return TMDMoEConfig(**SMALL_SIZE, expert_hidden=256)


@register_config
def tmd_moe_768() -> TMDMoEConfig:
    """The predecessor's width (768) and depth (6), experts of hidden width 768."""
    return TMDMoEConfig(**PREDECESSOR_SIZE, expert_hidden=768)
