"""Checks every model family's tests share: causality (with and without TMD) and the use of history."""

from __future__ import annotations

import torch

from lvm_pipeline.models.base import TMD_DIM, NextConceptModel


def assert_causal(model: NextConceptModel, d_input: int, tmd_mode: str, batch: int, seq: int, positions: tuple[int, ...]):
    """Perturbing the inputs (and per-position TMD) after t leaves the outputs up to t unchanged, and changes later
    ones; changing position t alone changes the output at t + 1 (the model uses its history)."""
    x = torch.randn(batch, seq, d_input)
    tmd = {"none": None, "per_sequence": torch.randn(batch, TMD_DIM), "per_position": torch.randn(batch, seq, TMD_DIM)}[tmd_mode]
    with torch.no_grad():
        reference = model(x, tmd)
        assert reference.shape == (batch, seq, d_input)
        for t in positions:
            perturbed_x = x.clone()
            perturbed_x[:, t + 1 :] = torch.randn(batch, seq - t - 1, d_input) * 5
            perturbed_tmd = tmd
            if tmd_mode == "per_position":
                perturbed_tmd = tmd.clone()
                perturbed_tmd[:, t + 1 :] = torch.randn(batch, seq - t - 1, TMD_DIM)
            out = model(perturbed_x, perturbed_tmd)
            torch.testing.assert_close(out[:, : t + 1], reference[:, : t + 1], atol=1e-5, rtol=0)
            assert not torch.allclose(out[:, t + 1 :], reference[:, t + 1 :], atol=1e-3)  # later outputs did change
            history_changed = x.clone()
            history_changed[:, t] += 1
            assert not torch.allclose(model(history_changed, tmd)[:, t + 1], reference[:, t + 1], atol=1e-4)
