"""What every next-concept model shares: the config fields, the input/output layers, TMD conditioning, a registry.

A model reads a right-padded batch of concept-vector sequences `x` [batch, seq, D] (D comes from the
encoder, never hard-coded) and predicts, at every position t, the vector of concept t + 1; position t
never sees positions after t (causality, tested for every family). Optional TMD conditioning: the
16-D TMD vector ([batch, 16], or per position [batch, seq, 16]) goes through a 16 -> d_model adapter
and is added to the inputs. Optional text view (`text_view`): at every position the encoder's embedding of the
context's recent text up to it (`evaluation.context_text.context_views`, [batch, seq, D]) goes through a D -> d_model
adapter, is added to the inputs, and is the residual base, the correction scaled by a gate that starts at 0: the
model starts from the encode_context baseline and learns what to change.

Families subclass `NextConceptModel` and implement `backbone` ([batch, seq, d_model] -> same, causal);
they are registered with `@family("name")`. Named configurations (documented dataclasses, a
`toy_<family>` for each) are registered with `@register_config` and built with `build_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

TMD_DIM = 16


@dataclass
class ModelConfig:
    """Fields every family has; each family's config subclasses this and sets `family`."""

    family: str = ""  # the registered family name (set by the subclass)
    d_model: int = 256  # width of the backbone
    n_layers: int = 2  # blocks (or recurrent layers) in the backbone
    dropout: float = 0.0  # dropout inside the backbone
    tmd: bool = False  # condition on the 16-D TMD vector (16 -> d_model adapter added to the inputs)
    residual: str = "last"  # the output is base + f(...): base "last" = x_t, "mean" = the mean of x_1..x_t, "none" = 0
    text_view: bool = False  # also read the encoder's embedding of the context text at each t; it is then the base

    def to_dict(self) -> dict:
        return asdict(self)


class NextConceptModel(nn.Module):
    """Input projection (+ TMD adapter) -> causal backbone -> output projection (+ a residual base: x_t or the mean)."""

    def __init__(self, config: ModelConfig, d_input: int):
        super().__init__()
        self.config, self.d_input = config, d_input
        self.input_proj = nn.Linear(d_input, config.d_model)
        self.tmd_adapter = nn.Linear(TMD_DIM, config.d_model) if config.tmd else None
        self.view_adapter = nn.Linear(d_input, config.d_model) if config.text_view else None
        self.output_proj = nn.Linear(config.d_model, d_input)
        # with the text view the output is view + gate * delta, the gate 0 at first (as ReZero): the first prediction
        # is encode_context, and the correction grows as the gate learns, not with Adam's first full-size steps
        self.view_gate = nn.Parameter(torch.zeros(())) if config.text_view else None

    def embed_inputs(self, x: torch.Tensor, tmd: torch.Tensor | None = None,
                     view: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's input [batch, seq, d_model]: the projected vectors plus the TMD and text-view adapters."""
        h = self.input_proj(x)
        if self.tmd_adapter is not None:
            if tmd is None:
                raise ValueError("this model is TMD-conditioned: pass tmd [batch, 16] or [batch, seq, 16]")
            h = h + self.tmd_adapter(tmd if tmd.dim() == 3 else tmd[:, None, :])
        if self.view_adapter is not None:
            if view is None:
                raise ValueError("this model reads the text view: pass view [batch, seq, D]")
            h = h + self.view_adapter(view)
        return h

    def backbone(self, h: torch.Tensor) -> torch.Tensor:
        """[batch, seq, d_model] -> [batch, seq, d_model]; position t may only use positions <= t."""
        raise NotImplementedError

    def features(self, x: torch.Tensor, tmd: torch.Tensor | None = None,
                 view: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's output [batch, seq, d_model] for the inputs (a family that also reads the raw TMD there,
        as the MoE's router, overrides this)."""
        return self.backbone(self.embed_inputs(x, tmd, view))

    # Hooks the trainer calls; the defaults suit every family that only predicts the next vector.
    trains_on_targets = False  # True: in training, forward also takes `target` [batch, seq, D] (a denoiser's input)
    samples = False  # True: the prediction is sampled (denoising steps): forward(..., at=[batch] positions) computes
    # only there (ModelPredictor passes each query's last position), and there is no ONNX export

    def fit_train_vectors(self, vectors: np.ndarray) -> None:
        """Fit what the model derives from the train split's concept vectors (N, D) before training (a scaler)."""

    def loss_space(self, vectors: torch.Tensor) -> torch.Tensor:
        """Predictions and targets as the training loss compares them ([..., D] -> [..., D]; the identity)."""
        return vectors

    def auxiliary_loss(self) -> torch.Tensor | None:
        """A loss term of the last forward pass that the trainer adds to the prediction loss (None: none)."""
        return None

    def forward(self, x: torch.Tensor, tmd: torch.Tensor | None = None, view: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, seq, D] (+ TMD [batch, 16] or [batch, seq, 16], + the text view [batch, seq, D]) -> [batch, seq, D],
        the next vector at each t."""
        out = self.output_proj(self.features(x, tmd, view))
        if self.view_gate is not None:
            return view + self.view_gate * out
        return out + residual_base(x, self.config.residual)


def residual_base(x: torch.Tensor, kind: str) -> torch.Tensor:
    """What the model's output is added to, at each position t: x_t, the running mean of x_1..x_t, or nothing.

    With right padding the running mean at a real position only counts real positions before it (causal)."""
    if kind == "last":
        return x
    if kind == "mean":
        counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        return torch.cumsum(x, dim=1) / counts
    if kind == "none":
        return torch.zeros_like(x)
    raise ValueError(f"residual must be 'last', 'mean' or 'none', got {kind!r}")


FAMILIES: dict[str, type[NextConceptModel]] = {}
CONFIG_CLASSES: dict[str, type[ModelConfig]] = {}
CONFIGS: dict[str, Callable[[], ModelConfig]] = {}


def family(name: str, config_class: type[ModelConfig]) -> Callable[[type[NextConceptModel]], type[NextConceptModel]]:
    """Class decorator: register a model class and its config class under a family name."""
    def register(cls: type[NextConceptModel]) -> type[NextConceptModel]:
        FAMILIES[name], CONFIG_CLASSES[name] = cls, config_class
        return cls
    return register


def register_config(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Function decorator: a named configuration (the function's name), e.g. `toy_gru`, `gru_small`."""
    CONFIGS[fn.__name__] = fn
    return fn


def build_model(config: ModelConfig | str, d_input: int) -> NextConceptModel:
    """The model of a config (or a registered config's name) for D-dimensional concept vectors."""
    _load_families()
    if isinstance(config, str):
        if config not in CONFIGS:
            raise KeyError(f"unknown model config {config!r}; registered: {', '.join(sorted(CONFIGS))}")
        config = CONFIGS[config]()
    if config.family not in FAMILIES:
        raise KeyError(f"unknown model family {config.family!r}; registered: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[config.family](config, d_input)


def registered_configs() -> dict[str, Callable[[], ModelConfig]]:
    """Every named configuration of every family: name -> a function returning its config."""
    _load_families()
    return dict(CONFIGS)


def config_from_dict(values: dict) -> ModelConfig:
    """The config saved by `ModelConfig.to_dict` (e.g. in a checkpoint's sidecar); unknown keys are an error."""
    _load_families()
    cls = CONFIG_CLASSES[values["family"]]
    known = {f.name for f in fields(cls)}
    if unknown := set(values) - known:
        raise ValueError(f"unknown {values['family']} config fields: {sorted(unknown)}")
    return cls(**values)


def _load_families() -> None:
    """Import the family modules, which register themselves."""
    import lvm_pipeline.models.zoo  # noqa: F401
