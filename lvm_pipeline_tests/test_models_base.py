"""The shared model layer: the residual base, the registry and the builder."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lvm_pipeline.models.base import build_model, config_from_dict, registered_configs, residual_base
from lvm_pipeline_tests.model_checks import assert_causal


def test_the_residual_base_is_the_last_vector_the_running_mean_or_nothing():
    x = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]]])
    assert torch.equal(residual_base(x, "last"), x)
    torch.testing.assert_close(residual_base(x, "mean"), torch.tensor([[[1.0, 0.0], [2.0, 1.0], [2.0, 2.0]]]))
    assert not residual_base(x, "none").any()
    with pytest.raises(ValueError, match="residual"):
        residual_base(x, "median")


def test_a_model_on_the_running_mean_is_still_causal():
    torch.manual_seed(0)
    model = build_model(replace(registered_configs()["toy_gru"](), residual="mean"), 12).eval()
    assert_causal(model, 12, "none", batch=2, seq=6, positions=(0, 2, 4))


def test_every_registered_config_builds_and_round_trips_through_its_dict():
    for name, make in registered_configs().items():
        if name.startswith("toy_"):
            config = make()
            assert config_from_dict(config.to_dict()) == config
            side = {"view": torch.randn(1, 3, 8)} if config.text_view else {}
            assert build_model(name, 8)(torch.randn(1, 3, 8), **side).shape == (1, 3, 8)
    with pytest.raises(KeyError, match="unknown model config"):
        build_model("toy_nothing", 8)


def test_the_text_view_is_the_residual_base_and_causal():
    model = build_model("toy_gru_text", 8).eval()
    x, view = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="text view"):
        model(x)
    with torch.no_grad():
        assert torch.equal(model(x, view=view), view)  # untrained, it predicts the view: encode_context
        model.view_gate.fill_(1.0)
        reference = model(x, view=view)
        for t in range(4):  # a later view never reaches position t
            later = view.clone()
            later[:, t + 1:] = torch.randn(2, 4 - t, 8)
            assert torch.allclose(model(x, view=later)[:, :t + 1], reference[:, :t + 1], atol=1e-6)
        changed = view.clone()
        changed[:, 2] += 1.0
        assert not torch.allclose(model(x, view=changed)[:, 2], reference[:, 2])
