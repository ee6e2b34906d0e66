"""Meta's two-tower diffusion LCM ("diffusion_lcm", arXiv 2412.08821) at small size.

Two towers, both on robust-scaled vectors (`RobustScaler`, fitted on the train split):
- the **contextualizer**, a causal pre-norm Transformer (`TransformerModel`'s backbone) over the clean context;
- the **denoiser**, which turns a noisy next vector into its clean estimate (x0 prediction). Each of its layers is
  self-attention of a position to itself only (which is its value and output projections), cross-attention to
  `[zero vector; contextualizer outputs]` (position t sees the zero vector and the outputs up to t: causal), and an
  MLP, each sub-layer modulated by AdaLN from the timestep's embedding (`SiLU -> Linear(d, 9d)`, zero-initialised:
  a shift, scale and gate per sub-layer, so a new layer starts as the identity).
Noise follows DDIM with a cosine schedule (`squaredcos_cap_v2`) rescaled to zero terminal SNR over T steps. In
training (`trains_on_targets`: the trainer passes the targets) each position's target is noised at a random step and
the output is the denoiser's x0 estimate, which the recipe's loss compares with the target in the scaled space;
`condition_dropout` of the rows see only the zero vector, which is what classifier-free guidance needs. In eval mode
the forward samples: from noise of scale `initial_noise_scale`, `inference_steps` deterministic DDIM steps, each with
a conditional and an unconditional denoiser pass combined with guidance g and rescaled (Lin et al.). The sampling
noise is seeded (`sample_seed`): the same batch gives the same predictions. Cost: inference_steps x 2 denoiser passes
per predicted concept (x 1 at g = 1); `ModelPredictor` asks for the last position of each query only (`at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lvm_pipeline.models.base import family, register_config
from lvm_pipeline.models.scaling import RobustScaler
from lvm_pipeline.models.transformer import TransformerConfig, TransformerModel

COSINE_OFFSET = 0.008  # squaredcos_cap_v2's s
MAX_BETA = 0.999


@dataclass
class DiffusionLCMConfig(TransformerConfig):
    """A causal Transformer contextualizer (the TransformerConfig fields) and an AdaLN denoiser with its schedule."""

    family: str = "diffusion_lcm"  # the registered family name
    residual: str = "none"  # the denoiser predicts the next vector itself
    denoiser_layers: int = 2  # layers of the denoiser tower (n_layers is the contextualizer's)
    timesteps: int = 100  # T, the steps of the noise schedule
    inference_steps: int = 40  # S, DDIM steps per sampled vector (Meta's default 40)
    guidance: float = 3.0  # g, classifier-free guidance scale (1: the conditional prediction alone)
    guidance_rescale: float = 0.7  # share of the guided estimate rescaled to the conditional one's spread (0: none)
    initial_noise_scale: float = 0.6  # standard deviation of the noise sampling starts from
    condition_dropout: float = 0.15  # share of training rows that see only the zero vector (for guidance)
    sample_seed: int = 0  # seed of the sampling noise


class DDIMSchedule(nn.Module):
    """The cosine schedule rescaled to zero terminal SNR: alpha_bar[t] for t = 0..T-1, alpha_bar[T-1] = 0."""

    def __init__(self, timesteps: int):
        super().__init__()
        if timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {timesteps}")
        steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
        cumulative = np.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        betas = np.minimum(1 - cumulative[1:] / cumulative[:-1], MAX_BETA)
        root = np.sqrt(np.cumprod(1 - betas))
        root = (root - root[-1]) * root[0] / (root[0] - root[-1])  # the last step pure noise, the first unchanged
        self.timesteps = timesteps
        self.register_buffer("alpha_bar", torch.from_numpy(root**2).float(), persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; `t` broadcasts over x0's leading dimensions."""
        alpha_bar = self.alpha_bar[t].unsqueeze(-1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def step(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, previous: int) -> torch.Tensor:
        """Deterministic DDIM (eta 0) from step t to `previous` (-1: the end, the clean vector) given the x0 estimate."""
        alpha_bar = self.alpha_bar[t]
        alpha_previous = self.alpha_bar[previous] if previous >= 0 else torch.ones_like(alpha_bar)
        noise = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return alpha_previous.sqrt() * x0 + (1 - alpha_previous).sqrt() * noise

    def inference_steps(self, count: int) -> list[int]:
        """`count` steps from T-1 down to 0, evenly spaced ("trailing": sampling starts at pure noise)."""
        if not 1 <= count <= self.timesteps:
            raise ValueError(f"inference_steps must be within 1..{self.timesteps}, got {count}")
        return sorted({round(s) for s in np.linspace(self.timesteps - 1, 0, count)}, reverse=True)


def guided(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float, rescale: float) -> torch.Tensor:
    """Classifier-free guidance on x0 estimates, the guided one rescaled toward the conditional one's spread."""
    mixed = unconditional + scale * (conditional - unconditional)
    if not rescale:
        return mixed
    ratio = conditional.std(dim=-1, keepdim=True) / mixed.std(dim=-1, keepdim=True).clamp_min(1e-12)
    return rescale * mixed * ratio + (1 - rescale) * mixed


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [..., dim] of integer steps `t` (dim even)."""
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = t.float().unsqueeze(-1) * frequencies
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return h * (1 + scale) + shift


class DenoiserLayer(nn.Module):
    """Self (to itself), cross (to the context slots `mask` allows) and MLP sub-layers, each AdaLN-modulated."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = n_heads, d_model // n_heads, dropout
        self.norms = nn.ModuleList(nn.LayerNorm(d_model, elementwise_affine=False) for _ in range(3))
        self.self_value, self.self_out = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.cross_query, self.cross_key_value = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model)
        self.cross_out = nn.Linear(d_model, d_model)
        hidden = int(round(d_model * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 9 * d_model))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def slot_keys_values(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, heads, K, head_dim] of the context slots [B, K, d] (the same at every sampling step)."""
        batch, n_slots, _ = slots.shape
        k, v = self.cross_key_value(slots).view(batch, n_slots, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, h: torch.Tensor, modulation: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        """h [B, Q, d]; `modulation` [B, Q, 9d] (this layer's `modulation` of the queries' timestep embeddings);
        `keys_values` of the slots (`slot_keys_values`); mask [B, Q, K] bool (True: may attend)."""
        shifts_scales_gates = modulation.chunk(9, dim=-1)
        sublayers = (lambda x: self.self_out(self.self_value(x)), lambda x: self._cross(x, keys_values, mask), self.mlp)
        for i, (norm, sublayer) in enumerate(zip(self.norms, sublayers, strict=True)):
            shift, scale, gate = shifts_scales_gates[3 * i:3 * i + 3]
            h = h + gate * sublayer(modulate(norm(h), shift, scale))
        return h

    def _cross(self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        batch, queries, d_model = x.shape
        q = self.cross_query(x).view(batch, queries, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = keys_values
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None],
                                                  dropout_p=self.dropout if self.training else 0.0)
        return self.cross_out(attended.transpose(1, 2).reshape(batch, queries, d_model))


@family("diffusion_lcm", DiffusionLCMConfig)
class DiffusionLCMModel(TransformerModel):
    """The contextualizer is TransformerModel's backbone; the denoiser, its schedule and the sampler are added."""

    trains_on_targets = True
    samples = True

    def __init__(self, config: DiffusionLCMConfig, d_input: int):
        if config.residual != "none":
            raise ValueError("the diffusion LCM samples the next vector itself: residual must be 'none'")
        if config.d_model % 2:
            raise ValueError(f"d_model must be even (sinusoidal timestep features), got {config.d_model}")
        super().__init__(config, d_input)
        self.view_gate = None  # the text view is an input of the contextualizer here, never the output's base
        self.scaler = RobustScaler(d_input)
        self.schedule = DDIMSchedule(config.timesteps)
        d = config.d_model
        self.noisy_proj = nn.Linear(d_input, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.denoiser = nn.ModuleList(DenoiserLayer(d, config.n_heads, config.mlp_ratio, config.dropout)
                                      for _ in range(config.denoiser_layers))
        self.denoiser_norm = nn.LayerNorm(d)

    def fit_train_vectors(self, vectors: np.ndarray) -> None:
        self.scaler.fit(vectors)

    def loss_space(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.scaler(vectors)

    def forward(self, x: torch.Tensor, tmd: torch.Tensor | None = None, view: torch.Tensor | None = None,
                target: torch.Tensor | None = None, at: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, seq, D] -> [batch, seq, D]. With `target` (training): the x0 estimates of the targets noised at
        random steps. Without: sampled next vectors, at every position, or only at positions `at` [batch] (one per row;
        the other positions are zeros)."""
        context = self.features(self.scaler(x), tmd, None if view is None else self.scaler(view))
        batch, seq, _ = context.shape
        slots = torch.cat((context.new_zeros(batch, 1, context.shape[-1]), context), dim=1)
        if target is not None:
            x0 = self.scaler(target)
            t = torch.randint(0, self.schedule.timesteps, (batch, seq), device=x.device)
            noisy = self.schedule.add_noise(x0, torch.randn_like(x0), t)
            unconditional = torch.rand(batch, device=x.device) < self.config.condition_dropout
            query_positions = torch.arange(seq, device=x.device).expand(batch, seq)
            return self.scaler.inverse(self.denoise(noisy, t, self.slot_keys_values(slots), query_positions,
                                                    unconditional))
        if at is None:
            return self.scaler.inverse(self.sample(slots, torch.arange(seq, device=x.device).expand(batch, seq)))
        out = x.new_zeros(x.shape)
        out[torch.arange(batch, device=x.device), at] = self.scaler.inverse(self.sample(slots, at[:, None]))[:, 0]
        return out

    def slot_keys_values(self, slots: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every denoiser layer's keys and values of the slots [B, K, d]: `[zero vector; context outputs]`."""
        return [layer.slot_keys_values(slots) for layer in self.denoiser]

    def denoise(self, noisy: torch.Tensor, t: torch.Tensor, keys_values: list[tuple[torch.Tensor, torch.Tensor]],
                query_positions: torch.Tensor, unconditional: torch.Tensor) -> torch.Tensor:
        """The x0 estimates [B, Q, D] (scaled) of `noisy` [B, Q, D] at steps `t` [B, Q]; query q of row b sees slots
        0..query_positions[b, q] + 1 (the zero vector and the context up to its position), or only slot 0 where
        `unconditional[b]`."""
        slot = torch.arange(keys_values[0][0].shape[2], device=noisy.device)
        limit = torch.where(unconditional[:, None], 0, query_positions + 1)
        mask = slot[None, None, :] <= limit[:, :, None]
        steps, step_of = torch.unique(t, return_inverse=True)  # modulations per distinct step: few, not B x Q
        time = self.time_mlp(timestep_features(steps, self.config.d_model))
        h = self.noisy_proj(noisy)
        for layer, layer_keys_values in zip(self.denoiser, keys_values, strict=True):
            h = layer(h, layer.modulation(time)[step_of], layer_keys_values, mask)
        return self.output_proj(self.denoiser_norm(h))

    def sample(self, slots: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        """Sampled x0 [B, Q, D] (scaled) at the query positions: DDIM with classifier-free guidance."""
        config, (batch, queries) = self.config, query_positions.shape
        generator = torch.Generator().manual_seed(config.sample_seed)
        x = (torch.randn(batch, queries, self.d_input, generator=generator) * config.initial_noise_scale).to(slots)
        guide = config.guidance != 1.0
        both = (lambda v: torch.cat((v, v))) if guide else (lambda v: v)  # the conditional rows, then the free ones
        unconditional = torch.arange(batch * (2 if guide else 1), device=slots.device) >= batch
        keys_values, positions = self.slot_keys_values(both(slots)), both(query_positions)
        steps = self.schedule.inference_steps(config.inference_steps)
        for i, t in enumerate(steps):
            estimate = self.denoise(both(x), torch.full_like(positions, t), keys_values, positions, unconditional)
            if guide:
                conditional, free = estimate.chunk(2)
                estimate = guided(conditional, free, config.guidance, config.guidance_rescale)
            x = self.schedule.step(x, estimate, t, steps[i + 1] if i + 1 < len(steps) else -1)
        return x


@register_config
def toy_diffusion_lcm() -> DiffusionLCMConfig:
    """Tiny two-tower diffusion LCM for tests (8 sampling steps)."""
    return DiffusionLCMConfig(d_model=32, n_layers=2, n_heads=4, mlp_ratio=2.0, denoiser_layers=2, inference_steps=8)


@register_config
def diffusion_lcm_small() -> DiffusionLCMConfig:
    """Two-tower diffusion LCM a 2-core CPU trains in minutes: 2 + 2 layers at width 256, Meta's schedule defaults."""
    return DiffusionLCMConfig(d_model=256, n_layers=2, n_heads=4, dropout=0.0, denoiser_layers=2)


@register_config
def diffusion_lcm_768() -> DiffusionLCMConfig:
    """At the predecessor's width (768, 12 heads): a 6-layer contextualizer and a 6-layer denoiser."""
    return DiffusionLCMConfig(d_model=768, n_layers=6, n_heads=12, dropout=0.1, denoiser_layers=6)
