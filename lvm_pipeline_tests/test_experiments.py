"""Variants 1A-1E as lvm_variant partitions and experiment_comparison over every trained model, through Dagster."""

from __future__ import annotations

import csv
import math

import pytest
from dagster import materialize

from lvm_pipeline.experiments.variants import VARIANTS
from lvm_pipeline.models.base import registered_configs
from lvm_pipeline.training.config import TrainConfig


def test_every_variant_is_one_change_to_the_base_recipe():
    base, recipe = registered_configs()["gru_small"](), TrainConfig()
    assert VARIANTS["1A"].apply(base, recipe) == (base, recipe)
    changed = {name: v.apply(base, recipe) for name, v in VARIANTS.items()}
    assert changed["1B"][0].tmd and changed["1D"][0].d_model > base.d_model
    assert changed["1C"][1].curriculum_epochs > 0 and changed["1E"][1].hard_negatives > 0
    for name, (model, train) in changed.items():  # only the variant's own fields differ
        differing = {k for k, v in vars(model).items() if vars(base)[k] != v}
        differing |= {k for k, v in vars(train).items() if vars(recipe)[k] != v}
        assert differing <= set(VARIANTS[name].model_changes) | set(VARIANTS[name].train_changes)
        assert bool(differing) == (name != "1A")


def test_variants_train_and_the_comparison_pairs_them_with_1a(database_url, dagster_instance, vital_records):
    from lvm_pipeline.config import settings
    from lvm_pipeline.defs import resources
    from lvm_pipeline.defs.benchmark import downstream_checks
    from lvm_pipeline.defs.datasets import ordered_vectors, training_sequences
    from lvm_pipeline.defs.experiments import experiment_comparison
    from lvm_pipeline.defs.training import LvmVariantConfig, lvm_variant
    from lvm_pipeline_tests.test_validation import run_batch

    assert run_batch(dagster_instance, "b.jsonl", vital_records, mode="sentence").success
    assert materialize([ordered_vectors, training_sequences, *downstream_checks], instance=dagster_instance,
                       resources=resources()).success
    toy = LvmVariantConfig(model="toy_gru", family="gru", epochs=2, patience=10, batch_size=16)
    for variant in ("1A", "1E"):
        trained = materialize([lvm_variant], partition_key=variant, instance=dagster_instance, resources=resources(),
                              run_config={"ops": {"lvm_variant": {"config": toy.model_dump()}}})
        meta = trained.asset_materializations_for_node("lvm_variant")[0].metadata
        assert meta["model"].value == f"gru-{variant}" and meta["variant"].value.startswith(variant)
    assert meta["train_config"].value["hard_negatives"] == VARIANTS["1E"].train_changes["hard_negatives"]

    for _ in range(2):  # two comparison runs
        result = materialize([experiment_comparison], instance=dagster_instance, resources=resources())
        meta = result.asset_materializations_for_node("experiment_comparison")[0].metadata
        assert meta["models"].value == 2 and meta["variants"].value == 2
    table = meta["comparison"].value
    assert "| gru-1A | variant 1A |" in table and "| gru-1E | variant 1E |" in table and "| copy_last | baseline |" in table
    row_1e = next(line for line in table.splitlines() if line.startswith("| gru-1E |"))
    assert row_1e.rstrip(" |").endswith("]") and " pts [" in row_1e.split("|")[-2]  # its paired difference to 1A
    rows = list(csv.DictReader(open(settings().reports_dir / "experiments.csv")))
    assert len(rows) == 4 and {r["name"] for r in rows} == {"gru-1A", "gru-1E"}  # two runs, appended
    assert all(r["dataset_version"] and 0 <= float(r["hit_at_5"]) <= 1 for r in rows)
    assert [r["vs_1a"] != "" for r in rows] == [r["variant"] == "1E" for r in rows]


def test_the_scaling_report_retrains_on_half_the_batches_and_measures_on_the_same_queries(
        database_url, dagster_instance, vital_records):
    from lvm_pipeline.config import settings
    from lvm_pipeline.datasets.bank import open_bank
    from lvm_pipeline.datasets.sequences import load_sequences
    from lvm_pipeline.defs import resources
    from lvm_pipeline.defs.benchmark import downstream_checks
    from lvm_pipeline.defs.datasets import ordered_vectors, sequences_dir, training_sequences
    from lvm_pipeline.defs.experiments import scaling_report
    from lvm_pipeline.defs.training import LvmCheckpointConfig, lvm_checkpoint
    from lvm_pipeline.experiments.scaling import half_of_batches
    from lvm_pipeline_tests.test_validation import run_batch

    for name, records in (("a.jsonl", vital_records[:30]), ("b.jsonl", vital_records[30:])):
        assert run_batch(dagster_instance, name, records, mode="sentence").success
    assert materialize([ordered_vectors, training_sequences, *downstream_checks], instance=dagster_instance,
                       resources=resources()).success
    sequences = load_sequences(open_bank(settings().exports_dir), sequences_dir())
    half, batches = half_of_batches(sequences)
    assert batches == ["a.jsonl"] and half.version != sequences.version
    assert 0 < len(half.articles["train"]) < len(sequences.articles["train"])
    assert all(half.windows[s] is sequences.windows[s] for s in ("val", "test"))  # the same queries

    toy = LvmCheckpointConfig(model="toy_gru", epochs=6, patience=10, batch_size=8)
    assert materialize([lvm_checkpoint], partition_key="gru", instance=dagster_instance, resources=resources(),
                       run_config={"ops": {"lvm_checkpoint": {"config": toy.model_dump()}}}).success
    result = materialize([scaling_report], instance=dagster_instance, resources=resources(),
                         run_config={"ops": {"scaling_report": {"config": {"n_resamples": 100}}}})
    meta = {k: v.value for k, v in result.asset_materializations_for_node("scaling_report")[0].metadata.items()}
    assert meta["hit_at_5_half"] > 0 and meta["coefficient"] == pytest.approx(meta["hit_at_5_all"] / meta["hit_at_5_half"])
    low, high = meta["coefficient_ci_low"], meta["coefficient_ci_high"]  # nan when a resample of half has no hit
    assert low <= meta["coefficient"] <= high or (math.isnan(low) and math.isnan(high))
    assert meta["half_batches"] == 1 and meta["half_train_articles"] == len(half.articles["train"])
    text = meta["report"]
    assert "target is >= 0.85" in text and "| gru-all |" in text and "| gru-half |" in text
    assert "| 1 | " in text and "| 2 | " in text  # every context length, not buckets
