"""Stacked LSTM and GRU families ("lstm", "gru"): one implementation, the recurrent layer class differs.

A unidirectional RNN is causal by construction: the output at t depends only on inputs <= t, so the
right padding of a batch never reaches real positions. Dropout sits between the stacked layers (PyTorch
applies it to every layer's output except the last), and a LayerNorm normalises the top layer's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lvm_pipeline.models.base import ModelConfig, NextConceptModel, family, register_config


@dataclass
class RecurrentConfig(ModelConfig):
    """A stacked RNN: `d_model` is the hidden size of every layer, `n_layers` the stack depth (no other fields)."""

    family: str = ""  # "lstm" or "gru" (set by the subclass)


@dataclass
class LSTMConfig(RecurrentConfig):
    """A stacked nn.LSTM."""

    family: str = "lstm"  # the registered family name


@dataclass
class GRUConfig(RecurrentConfig):
    """A stacked nn.GRU."""

    family: str = "gru"  # the registered family name


class RecurrentModel(NextConceptModel):
    """Stacked `rnn_class` (batch_first, dropout between layers) -> LayerNorm; subclasses pick `rnn_class`."""

    rnn_class: type[nn.RNNBase]  # nn.LSTM or nn.GRU

    def __init__(self, config: RecurrentConfig, d_input: int):
        super().__init__(config, d_input)
        self.rnn = self.rnn_class(
            input_size=config.d_model,
            hidden_size=config.d_model,
            num_layers=config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,  # PyTorch warns on dropout with a single layer
        )
        self.norm = nn.LayerNorm(config.d_model)

    def backbone(self, h: torch.Tensor) -> torch.Tensor:
        outputs, _final_state = self.rnn(h)
        return self.norm(outputs)


@family("lstm", LSTMConfig)
class LSTMModel(RecurrentModel):
    rnn_class = nn.LSTM


@family("gru", GRUConfig)
class GRUModel(RecurrentModel):
    rnn_class = nn.GRU


# Sizes shared by both recurrent families: tests on CPU, the 2-core demo, the predecessor's size.
TOY_SIZE = {"d_model": 32, "n_layers": 2}
SMALL_SIZE = {"d_model": 256, "n_layers": 2, "dropout": 0.0}  # a minute of training: dropout only slows it
PREDECESSOR_SIZE = {"d_model": 768, "n_layers": 6, "dropout": 0.1}


@register_config
def toy_lstm() -> LSTMConfig:
    """Tiny LSTM for tests (milliseconds on CPU)."""
    return LSTMConfig(**TOY_SIZE)


@register_config
def lstm_small() -> LSTMConfig:
    """LSTM the demo trains on 2 CPU cores in about a minute."""
    return LSTMConfig(**SMALL_SIZE)


@register_config
def lstm_768() -> LSTMConfig:
    """LSTM at the predecessor's width (768) and depth (6)."""
    return LSTMConfig(**PREDECESSOR_SIZE)


@register_config
def toy_gru() -> GRUConfig:
    """Tiny GRU for tests (milliseconds on CPU)."""
    return GRUConfig(**TOY_SIZE)


@register_config
def gru_small() -> GRUConfig:
    """GRU the demo trains on 2 CPU cores in about a minute."""
    return GRUConfig(**SMALL_SIZE)


@register_config
def gru_text_small() -> GRUConfig:
    """gru_small reading the text view too (the encoder's embedding of the context text at each position)."""
    return GRUConfig(**SMALL_SIZE, text_view=True)


@register_config
def toy_gru_text() -> GRUConfig:
    """toy_gru with the text view, for tests."""
    return GRUConfig(**TOY_SIZE, text_view=True)


@register_config
def gru_768() -> GRUConfig:
    """GRU at the predecessor's width (768) and depth (6)."""
    return GRUConfig(**PREDECESSOR_SIZE)
