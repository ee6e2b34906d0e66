"""The comparison's ensembles (chosen by the members' own val Hit@5, never test; an ensemble of one model is the
model; the val-weighted one fitted on val queries only) and its entries (a checkpoint that no longer loads is left
out with its reason)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.baselines import CopyLast, MeanContext
from lvm_pipeline.evaluation.ensemble import Ensemble
from lvm_pipeline.experiments.comparison import Entry, best_on_val_ensembles
from lvm_pipeline.models.base import build_model
from lvm_pipeline.training.checkpoint import load_checkpoint, save_checkpoint, trained_model
from lvm_pipeline_tests.test_training import planted_bank


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    return build_sequences(planted_bank(tmp_path_factory.mktemp("planted") / "bank"), spec=WindowSpec(max_context=8))


class Recorder:
    """A predictor that delegates to another and records which queries it was asked about."""

    def __init__(self, inner, name: str):
        self.inner, self.name, self.asked = inner, name, []

    def predict(self, vectors, queries, tmd=None):
        self.asked.append(queries.target.copy())
        return self.inner.predict(vectors, queries, tmd)


def entry(predictor, val_hit_at_5: float) -> Entry:
    return Entry(predictor.name, None, predictor, {"metrics": {"hit_at_5": val_hit_at_5}})


def test_an_ensemble_of_one_model_is_the_model(sequences):
    vectors, queries = sequences.bank.vectors, sequences.windows["test"]
    model = MeanContext()
    np.testing.assert_allclose(Ensemble([model]).predict(vectors, queries), unit_rows(model.predict(vectors, queries)),
                               atol=1e-6)


def test_the_ensembles_take_the_best_on_val_and_fit_their_weights_on_val_only(sequences):
    copy, mean, worst = Recorder(CopyLast(), "copy"), Recorder(MeanContext(), "mean"), Recorder(CopyLast(), "worst")
    entries = [entry(worst, 0.01), entry(mean, 0.30), entry(copy, 0.20)]
    equal, weighted = best_on_val_ensembles(sequences, entries, size=2)
    assert [m.name for m in equal.members] == ["mean", "copy"] == [m.name for m in weighted.members]
    assert equal.name == "ensemble-top2" and weighted.name == "ensemble-top2-val"
    np.testing.assert_allclose(equal.weights, [0.5, 0.5])
    assert weighted.val_hit_at_5 is not None and np.isclose(weighted.weights.sum(), 1)
    val_targets = set(sequences.windows["val"].target.tolist())
    test_targets = set(sequences.windows["test"].target.tolist())
    asked = set(np.concatenate(copy.asked + mean.asked).tolist())
    assert asked and asked <= val_targets and not asked & test_targets  # fitting read val, never test
    assert not worst.asked
    assert best_on_val_ensembles(sequences, entries[:1], size=3) == []  # one model: nothing to combine


def test_a_checkpoint_whose_weights_do_not_fit_the_code_is_left_out_with_its_reason(sequences, tmp_path):
    """A family's modules renamed since a run saved its weights: the comparison and the report skip that run and
    say why, instead of failing on every other model too."""
    model = build_model("toy_gru", sequences.bank.vectors.shape[1])
    sidecar = {"model_name": "gru", "model_config": model.config.to_dict(), "d_input": model.d_input,
               "encoder_fingerprint": sequences.bank.manifest.get("encoder_fingerprint"),
               "bank_version": sequences.bank.version, "dataset_version": sequences.version}
    save_checkpoint(tmp_path, model, sidecar, name="best")
    assert not isinstance(trained_model(tmp_path, sequences), str)
    changed = json.loads((tmp_path / "best.json").read_text())
    changed["model_config"]["d_model"] = 16  # what the weights were not saved for
    (tmp_path / "best.json").write_text(json.dumps(changed))
    with pytest.raises(PipelineError, match="do not fit this code's gru model"):
        load_checkpoint(tmp_path / "best.safetensors")
    reason = trained_model(tmp_path, sequences)
    assert isinstance(reason, str) and reason.startswith("left out:") and "do not fit" in reason
