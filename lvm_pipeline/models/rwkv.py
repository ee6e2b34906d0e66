"""RWKV ("rwkv", RWKV-4 style): a linear-attention RNN whose blocks are a time-mix and a channel-mix, both pre-norm.

Time-mix: token shift (each position's input mixed per channel with the previous position's; position 0 with zeros),
receptance r, key k and value v projections, then the WKV average over the past, per channel:
    wkv_t = (sum_{i<t} exp((t-1-i) w + k_i) v_i + exp(u + k_t) v_t) / (same sums without v),
with a learned decay w = -exp(decay) < 0 (the state shrinks by exp(w) per step) and a bonus u for the current token;
the output is out(sigmoid(r) * wkv). Channel-mix: token shift, value(relu(key(x))^2) gated by sigmoid(receptance(x)).

`wkv_recurrent` runs the WKV one step at a time on a state (numerator, denominator) kept relative to its running
log-scale maximum, so exp never overflows whatever the keys; linear in length, what training uses. `wkv_parallel`
computes every position at once as a softmax over the past in log space: quadratic in length, but without a loop
over positions (an ONNX export keeps a symbolic length). Both equal `exp`-naive arithmetic where that is finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lvm_pipeline.models.base import ModelConfig, family, register_config
from lvm_pipeline.models.blocks import MixerBlock, MixerStackModel

WKV_FORMS = ("recurrent", "parallel")


@dataclass
class RWKVConfig(ModelConfig):
    """A stack of RWKV blocks (time-mix + channel-mix) of width `d_model`, then a final LayerNorm."""

    family: str = "rwkv"  # the registered family name
    ffn_ratio: float = 4.0  # hidden width of the channel-mix (its squared-ReLU key), as a multiple of d_model
    form: str = "recurrent"  # the WKV: "recurrent" (a stable loop, linear in length) or "parallel" (quadratic, no loop)


def _computation_dtype(t: torch.Tensor) -> torch.dtype:
    """float16/bfloat16 -> float32 (exp of accumulated decays is too coarse in half precision); float32/64 kept."""
    return torch.promote_types(t.dtype, torch.float32)


def wkv_recurrent(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The WKV one step at a time: w [C] (< 0, the log of the per-step decay), u [C], k and v [batch, seq, C] ->
    wkv [batch, seq, C].

    The state is (a, b) = (sum of exp(key) v, sum of exp(key)) decayed, stored as a exp(-p), b exp(-p) with p the
    running maximum exponent: every exp below is of a number <= 0."""
    a = k.new_zeros(k.shape[0], k.shape[2])
    b = torch.zeros_like(a)
    p = torch.full_like(a, -torch.inf)  # log scale of the empty state
    outputs = []
    for t in range(k.shape[1]):
        k_t, v_t = k[:, t], v[:, t]
        current = u + k_t  # the current token's exponent, with its bonus
        top = torch.maximum(p, current)
        from_state, from_current = torch.exp(p - top), torch.exp(current - top)
        outputs.append((from_state * a + from_current * v_t) / (from_state * b + from_current))
        decayed = p + w  # the state's exponent after one step of decay
        top = torch.maximum(decayed, k_t)
        from_state, from_current = torch.exp(decayed - top), torch.exp(k_t - top)
        a, b, p = from_state * a + from_current * v_t, from_state * b + from_current, top
    return torch.stack(outputs, dim=1) if outputs else torch.zeros_like(v)


def wkv_parallel(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The WKV at every position at once (shapes as `wkv_recurrent`): for each t and channel, a softmax over i <= t
    of the exponents (t-1-i) w + k_i (i < t) and u + k_t (i = t), weighting v_i. Memory batch * seq^2 * C."""
    seq = k.shape[1]
    positions = torch.arange(seq, device=k.device)
    steps_back = (positions[:, None] - positions[None, :] - 1).to(k.dtype)  # [t, i]: t-1-i
    k_by_channel = k.transpose(1, 2)[:, :, None, :]  # [batch, C, 1, i]
    exponents = k_by_channel + w[:, None, None] * steps_back  # [batch, C, t, i]
    diagonal = torch.eye(seq, dtype=torch.bool, device=k.device)
    exponents = torch.where(diagonal, k_by_channel + u[:, None, None], exponents)
    future = torch.ones(seq, seq, dtype=torch.bool, device=k.device).triu(1)
    weights = torch.softmax(exponents.masked_fill(future, -torch.inf), dim=-1)
    return (weights @ v.transpose(1, 2)[..., None]).squeeze(-1).transpose(1, 2)


WKV_FUNCTIONS = {"recurrent": wkv_recurrent, "parallel": wkv_parallel}


class TokenShift(nn.Module):
    """x_t mixed per channel with x_{t-1} (zeros before position 0) by learned shares, one set per output."""

    def __init__(self, d_model: int, n_outputs: int):
        super().__init__()
        # the share of the current token, spread from 1 (this token only) to 0.5 (half the previous) over channels
        self.current_share = nn.Parameter(torch.linspace(1.0, 0.5, d_model).repeat(n_outputs, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[batch, seq, d] -> n_outputs tensors [batch, seq, d]."""
        previous = F.pad(x, (0, 0, 1, -1))  # position t holds x_{t-1}; position 0 holds zeros
        change = x - previous
        return tuple(torch.addcmul(previous, share, change) for share in self.current_share.unbind(0))


class TimeMix(nn.Module):
    """Token shift -> r, k, v -> WKV (per-channel decay w = -exp(decay), bonus u) -> out(sigmoid(r) * wkv)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.shift = TokenShift(d_model, 3)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)
        # decays from slow (w = -exp(-6): memory of hundreds of steps) to fast (w = -exp(1): about one step)
        self.decay = nn.Parameter(torch.linspace(-6.0, 1.0, d_model))
        self.bonus = nn.Parameter(torch.full((d_model,), -1.2))  # u; exp(-1.2) ~ 0.3, the current token's weight

    def forward(self, x: torch.Tensor, form: str = "recurrent") -> torch.Tensor:
        if form not in WKV_FORMS:
            raise ValueError(f"form must be one of {WKV_FORMS}, got {form!r}")
        for_r, for_k, for_v = self.shift(x)
        r, k, v = self.receptance(for_r), self.key(for_k), self.value(for_v)
        dtype = _computation_dtype(k)
        with torch.autocast(device_type=x.device.type, enabled=False):
            wkv = WKV_FUNCTIONS[form](-torch.exp(self.decay.to(dtype)), self.bonus.to(dtype), k.to(dtype), v.to(dtype))
        return self.output(torch.sigmoid(r) * wkv.to(r.dtype))


class ChannelMix(nn.Module):
    """Token shift -> sigmoid(receptance) * value(relu(key)^2)."""

    def __init__(self, d_model: int, ffn_ratio: float):
        super().__init__()
        hidden = int(round(d_model * ffn_ratio))
        self.shift = TokenShift(d_model, 2)
        self.key = nn.Linear(d_model, hidden, bias=False)
        self.value = nn.Linear(hidden, d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for_k, for_r = self.shift(x)
        hidden = torch.relu_(self.key(for_k))  # in place: the projection's output is not needed for its backward
        return torch.sigmoid(self.receptance(for_r)) * self.value(hidden * hidden)


@family("rwkv", RWKVConfig)
class RWKVModel(MixerStackModel):
    """`n_layers` blocks of time-mix and channel-mix -> final LayerNorm; the WKV in the form `config.form` names."""

    forms = WKV_FORMS

    def make_block(self, config: RWKVConfig) -> MixerBlock:
        return MixerBlock(config.d_model, TimeMix(config.d_model), ChannelMix(config.d_model, config.ffn_ratio),
                          config.dropout)


@register_config
def toy_rwkv() -> RWKVConfig:
    """Tiny RWKV for tests (milliseconds on CPU)."""
    return RWKVConfig(d_model=32, n_layers=2, ffn_ratio=2.0)


@register_config
def rwkv_small() -> RWKVConfig:
    """RWKV the demo trains on 2 CPU cores in about a minute (no dropout, as every `_small`)."""
    return RWKVConfig(d_model=256, n_layers=2, dropout=0.0)


@register_config
def rwkv_768() -> RWKVConfig:
    """RWKV at the predecessor's width (768) and depth (6)."""
    return RWKVConfig(d_model=768, n_layers=6, dropout=0.1)
