"""Mamba-2 ("mamba2"): a pure-PyTorch SSD layer whose parameters are named and shaped like `mamba_ssm`'s `Mamba2`.

The layer (Dao & Gu 2024, "Transformers are SSMs"): in_proj -> split (z, xBC, dt) -> causal depthwise conv + SiLU
on xBC -> split (x, B, C) -> the selective state space y_t = C_t h_t, h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t
(scalar A per head, B and C shared by the heads of a group) -> y + D x -> RMSNorm(y * silu(z)) -> out_proj.

`ssd_chunked` computes the state space model in chunks (quadratic, attention-like inside a chunk, states passed
between chunks); `ssd_recurrence` is the step-by-step recurrence it is tested against. On CUDA with `mamba_ssm`
importable the fused Triton scan replaces `ssd_chunked`; `mamba_ssm` is optional (it fails to import without its
CUDA extension), so it is only imported lazily and under a guard. Since the state-dict keys and shapes equal
`mamba_ssm`'s (`in_proj.weight`, `conv1d.weight`, `conv1d.bias`, `dt_bias`, `A_log`, `D`, `norm.weight`,
`out_proj.weight`), weights load either way with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lvm_pipeline.models.base import ModelConfig, NextConceptModel, family, register_config


@functools.cache
def _fused_chunk_scan() -> Callable | None:
    """`mamba_ssm`'s fused chunk scan, or None where `mamba_ssm` does not import (any error, not only ImportError)."""
    try:
        from mamba_ssm import Mamba2 as _FusedMamba2  # noqa: F401  (fails without the CUDA extension)
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:
        return None
    return mamba_chunk_scan_combined


def fused_available() -> bool:
    """Whether `mamba_ssm`'s fused kernels can be used (they are, for CUDA tensors)."""
    return _fused_chunk_scan() is not None


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _heads_per_group(n_heads: int, n_groups: int) -> int:
    if n_heads % n_groups:
        raise ValueError(f"{n_heads} heads do not split into {n_groups} groups")
    return n_heads // n_groups


def _segment_sums(a: torch.Tensor) -> torch.Tensor:
    """[..., T] -> [..., T, T]: out[..., i, j] = a[j+1] + ... + a[i] for i >= j (0 on the diagonal), -inf above it.

    Summed directly rather than as a difference of cumulative sums, which loses precision when those grow large.
    """
    length = a.shape[-1]
    ones = torch.ones(length, length, dtype=torch.bool, device=a.device)
    summands = a[..., :, None].expand(*a.shape, length).masked_fill(~ones.tril(-1), 0.0)  # [..., k, j] = a[k] if k > j
    return summands.cumsum(dim=-2).masked_fill(~ones.tril(), -math.inf)


def ssd_chunked(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """The selective state space model by state-space duality, in chunks of `chunk_size` positions.

    x [batch, seq, heads, headdim], dt [batch, seq, heads] (> 0), A [heads] (< 0), B and C [batch, seq, groups,
    d_state] -> y [batch, seq, heads, headdim], equal to `ssd_recurrence`. Any length: the last chunk is padded
    with dt = 0 (no decay, no input), which cannot reach earlier positions, and the padding is stripped; a
    sequence shorter than `chunk_size` is one chunk of its own length (no padding to compute).
    """
    batch, length, n_heads, headdim = x.shape
    n_groups, d_state = B.shape[2:]
    ratio = _heads_per_group(n_heads, n_groups)
    chunk_size = min(chunk_size, length)
    pad = -length % chunk_size
    if pad:
        x, dt, B, C = (F.pad(t, (0,) * (2 * t.dim() - 4) + (0, pad)) for t in (x, dt, B, C))
    n_chunks = (length + pad) // chunk_size

    # Head-major layouts, so that every product below is a batched matmul on contiguous blocks:
    # heads [b, g, r, c, l, ...] (head = g * ratio + r, chunk c, position l in the chunk), groups [b, g, c, l, n].
    def by_head(t: torch.Tensor) -> torch.Tensor:  # [b, seq, h, ...] -> [b, g, r, c, l, ...]
        t = t.reshape(batch, n_chunks, chunk_size, n_groups, ratio, *t.shape[3:])
        return t.permute(0, 3, 4, 1, 2, *range(5, t.dim()))

    def by_group(t: torch.Tensor) -> torch.Tensor:  # [b, seq, g, n] -> [b, g, c, l, n]
        return t.reshape(batch, n_chunks, chunk_size, n_groups, d_state).permute(0, 3, 1, 2, 4).contiguous()

    x_dt = by_head(x * dt[..., None]).contiguous()  # [b, g, r, c, l, p]: the input scaled by its step
    B, C = by_group(B), by_group(C)
    log_decay = by_head(dt * A)  # [b, g, r, c, l]: log of each step's decay exp(dt A)
    log_decay_cum = log_decay.cumsum(dim=-1)  # log decay from the chunk's start to each position (inclusive)

    # 1. inside each chunk: y_i = sum_{j <= i} (C_i . B_j) exp(sum_{j < k <= i} dt_k A) x_j dt_j, like masked attention
    scores = C @ B.mT  # [b, g, c, i, j], shared by the group's heads
    decay = torch.exp(_segment_sums(log_decay))  # [b, g, r, c, i, j]
    y = (scores[:, :, None] * decay) @ x_dt  # [b, g, r, c, i, p]

    # 2. each chunk's own contribution to the state at its end: sum_j exp(log decay from j to the end) x_j dt_j B_j^T
    to_end = torch.exp(log_decay_cum[..., -1:] - log_decay_cum)  # [b, g, r, c, j]
    chunk_states = (x_dt * to_end[..., None]).mT @ B[:, :, None]  # [b, g, r, c, p, n]

    # 3. between chunks, a scan over chunks (linear in their number): the state entering a chunk is the previous
    # chunk's entering state decayed across that chunk, plus that chunk's own contribution
    chunk_decay = torch.exp(log_decay_cum[..., -1])[..., None, None]  # [b, g, r, c, 1, 1]
    entering = [torch.zeros_like(chunk_states[:, :, :, 0])]
    for chunk in range(n_chunks - 1):
        entering.append(entering[-1] * chunk_decay[:, :, :, chunk] + chunk_states[:, :, :, chunk])
    entering_states = torch.stack(entering, dim=3)  # [b, g, r, c, p, n]

    # 4. the entering state read out at each position, decayed from the chunk's start
    y = y + (C[:, :, None] @ entering_states.mT) * torch.exp(log_decay_cum)[..., None]
    y = y.permute(0, 3, 4, 1, 2, 5).reshape(batch, n_chunks * chunk_size, n_heads, headdim)
    return y[:, :length]


def ssd_recurrence(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The same model one step at a time: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t (shapes as `ssd_chunked`)."""
    batch, length, n_heads, headdim = x.shape
    ratio = _heads_per_group(n_heads, B.shape[2])
    B, C = B.repeat_interleave(ratio, dim=2), C.repeat_interleave(ratio, dim=2)  # [b, l, h, n]: each head's group
    state = x.new_zeros(batch, n_heads, headdim, B.shape[-1])
    outputs = []
    for t in range(length):
        step = dt[:, t, :, None, None]
        state = torch.exp(step * A[:, None, None]) * state + step * x[:, t, :, :, None] * B[:, t, :, None, :]
        outputs.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    return torch.stack(outputs, dim=1) if outputs else x.new_zeros(x.shape)


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) * weight over groups of `group_size` channels (`mamba_ssm`'s RMSNormGated, norm after the gate)."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gated = (_at_least_float32(y) * F.silu(_at_least_float32(z))).unflatten(-1, (-1, self.group_size))
        normed = gated * torch.rsqrt(gated.square().mean(dim=-1, keepdim=True) + self.eps)
        return (normed.flatten(-2) * _at_least_float32(self.weight)).to(y.dtype)


class Mamba2Layer(nn.Module):
    """One Mamba-2 mixer, [batch, seq, d_model] -> same; parameters named, shaped and initialised like `mamba_ssm.Mamba2`."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 64,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.headdim, self.ngroups, self.chunk_size = headdim, ngroups, chunk_size
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"d_inner = expand * d_model = {self.d_inner} is not a multiple of headdim {headdim}")
        self.nheads = self.d_inner // headdim
        _heads_per_group(self.nheads, ngroups)
        conv_dim = self.d_inner + 2 * ngroups * d_state  # x, B and C go through the convolution
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=False)  # z, x, B, C, dt
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim, padding=d_conv - 1, bias=True)

        # dt log-uniform in [dt_min, dt_max], stored through the inverse of softplus (forward applies softplus)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.empty(self.nheads).uniform_(*A_init_range).log())  # A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(self.nheads))  # skip connection y += D x
        for no_decay in (self.dt_bias, self.A_log, self.D):
            no_decay._no_weight_decay = True  # the marker mamba_ssm's optimiser grouping reads
        self.norm = GatedRMSNorm(self.d_inner, group_size=self.d_inner // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        batch, length, _ = u.shape
        group_width = self.ngroups * self.d_state
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * group_width, self.nheads], dim=-1)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :length].transpose(1, 2))  # causal: keep the first `length`
        x, B, C = xBC.split([self.d_inner, group_width, group_width], dim=-1)
        x = x.unflatten(-1, (self.nheads, self.headdim))
        B, C = B.unflatten(-1, (self.ngroups, self.d_state)), C.unflatten(-1, (self.ngroups, self.d_state))
        A = -torch.exp(_at_least_float32(self.A_log))
        fused = _fused_chunk_scan() if u.is_cuda else None
        if fused is not None:
            y = fused(x, dt, A, B, C, self.chunk_size, D=self.D, dt_bias=self.dt_bias, dt_softplus=True)
        else:
            y = self._ssd(x, F.softplus(dt + self.dt_bias), A, B, C) + self.D[:, None] * x
        return self.out_proj(self.norm(y.flatten(-2), z))

    def _ssd(self, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """`ssd_chunked` in at least float32 (exp of summed decays is too coarse in half precision), autocast off."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = ssd_chunked(*map(_at_least_float32, (x, dt, A, B, C)), self.chunk_size)
        return y.to(x.dtype)


@dataclass
class Mamba2Config(ModelConfig):
    """A stack of pre-norm residual Mamba-2 blocks; the layer fields default to `mamba_ssm.Mamba2`'s."""

    family: str = "mamba2"  # the registered family name
    d_state: int = 128  # N: size of each head's state per channel (B and C are d_state wide)
    d_conv: int = 4  # width of the causal depthwise convolution over x, B, C
    expand: int = 2  # d_inner = expand * d_model channels inside the layer
    headdim: int = 64  # P: channels per head (nheads = d_inner / headdim, each with its own A and dt)
    ngroups: int = 1  # groups of heads sharing B and C (1 = all heads share them, as multi-value attention)
    chunk_size: int = 64  # positions per chunk of the chunked SSD (a speed knob; results do not depend on it)
    norm: str = "rmsnorm"  # the blocks' pre-norm and the final norm: "rmsnorm" or "layernorm"


def make_norm(kind: str, d_model: int) -> nn.Module:
    """The norm a config names: "rmsnorm" or "layernorm"."""
    norms = {"rmsnorm": nn.RMSNorm, "layernorm": nn.LayerNorm}
    if kind not in norms:
        raise ValueError(f"unknown norm {kind!r}; known: {', '.join(norms)}")
    return norms[kind](d_model, eps=1e-5)


class Mamba2Block(nn.Module):
    """h + dropout(Mamba2Layer(norm(h)))."""

    def __init__(self, config: Mamba2Config):
        super().__init__()
        self.norm = make_norm(config.norm, config.d_model)
        self.mixer = Mamba2Layer(
            config.d_model, d_state=config.d_state, d_conv=config.d_conv, expand=config.expand,
            headdim=config.headdim, ngroups=config.ngroups, chunk_size=config.chunk_size,
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.dropout(self.mixer(self.norm(h)))


@family("mamba2", Mamba2Config)
class Mamba2Model(NextConceptModel):
    """n_layers blocks (`make_block` picks each one; Mamba-2 here, subclasses mix in others) -> final norm."""

    def __init__(self, config: Mamba2Config, d_input: int):
        super().__init__(config, d_input)
        self.blocks = nn.ModuleList(self.make_block(config, index) for index in range(1, config.n_layers + 1))
        self.final_norm = make_norm(config.norm, config.d_model)

    def make_block(self, config: Mamba2Config, index: int) -> nn.Module:
        """Block `index` (1-based) of the stack."""
        return Mamba2Block(config)

    def backbone(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h)
        return self.final_norm(h)


@register_config
def toy_mamba2() -> Mamba2Config:
    """Tiny Mamba-2 for tests (8 heads of 8 channels, chunks of 16 so that short sequences span several)."""
    return Mamba2Config(d_model=32, n_layers=2, d_state=16, headdim=8, chunk_size=16)


@register_config
def mamba2_small() -> Mamba2Config:
    """Mamba-2 the demo trains on 2 CPU cores (8 heads of 64 channels, state 64; no dropout, as every `_small`)."""
    return Mamba2Config(d_model=256, n_layers=2, dropout=0.0, d_state=64, headdim=64)


@register_config
def mamba2_768() -> Mamba2Config:
    """Mamba-2 at the predecessor's width (768) and depth (6) with `mamba_ssm.Mamba2`'s defaults (24 heads, state 128)."""
    return Mamba2Config(d_model=768, n_layers=6, dropout=0.1)
