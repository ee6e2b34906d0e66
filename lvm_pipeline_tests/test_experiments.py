"""Variants 1A-1E as lvm_variant partitions and experiment_comparison over every trained model, through Dagster;
the comparison logged to a real local MLflow store (where the `mlflow` extra is installed)."""

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


def test_variants_train_and_the_comparison_pairs_them_with_1a(database_url, dagster_instance, vital_records,
                                                              monkeypatch):
    from lvm_pipeline.config import settings
    from lvm_pipeline.defs import resources
    from lvm_pipeline.defs.benchmark import downstream_checks
    from lvm_pipeline.defs.datasets import ordered_vectors, training_sequences
    from lvm_pipeline.defs.experiments import experiment_comparison
    from lvm_pipeline.defs.training import LvmVariantConfig, lvm_variant
    from lvm_pipeline.experiments.tracking import mlflow_available
    from lvm_pipeline_tests.test_validation import run_batch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # never a developer's own tracking server

    assert run_batch(dagster_instance, "b.jsonl", vital_records, mode="sentence").success
    assert materialize([ordered_vectors, training_sequences, *downstream_checks], instance=dagster_instance,
                       resources=resources()).success
    for seed in (0, 1):
        toy = LvmVariantConfig(model="toy_gru", family="gru", epochs=2, patience=10, batch_size=16, seed=seed)
        for variant in ("1A", "1E"):
            trained = materialize([lvm_variant], partition_key=variant, instance=dagster_instance, resources=resources(),
                                  run_config={"ops": {"lvm_variant": {"config": toy.model_dump()}}})
            meta = trained.asset_materializations_for_node("lvm_variant")[0].metadata
            assert meta["model"].value == f"gru-{variant}" + ("-seed1" if seed else "")
            assert meta["variant"].value.startswith(variant) and meta["seed"].value == seed
    assert meta["train_config"].value["hard_negatives"] == VARIANTS["1E"].train_changes["hard_negatives"]

    for _ in range(2):  # two comparison runs
        result = materialize([experiment_comparison], instance=dagster_instance, resources=resources())
        meta = result.asset_materializations_for_node("experiment_comparison")[0].metadata
        assert meta["models"].value == 4 and meta["variants"].value == 4
    table = meta["comparison"].value
    assert "| gru-1A | variant 1A |" in table and "| gru-1E | variant 1E |" in table and "| copy_last | baseline |" in table
    assert "| gru-1A-seed1 | variant 1A |" in table
    assert "](data:image/png;base64," in table  # the plot inside the UI's markdown, not a link to a file beside it
    for name in ("gru-1E", "gru-1E-seed1"):  # each paired with the 1A of its own seed
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert row.rstrip(" |").endswith("]") and " pts [" in row.split("|")[-2]
    assert "## Over seeds" in table and "| gru-1A | 2 |" in table and "| gru-1E | 2 |" in table
    rows = list(csv.DictReader(open(settings().reports_dir / "experiments.csv")))
    assert len(rows) == 8 and {r["name"] for r in rows} == {"gru-1A", "gru-1E", "gru-1A-seed1", "gru-1E-seed1"}
    assert all(r["dataset_version"] and 0 <= float(r["hit_at_5"]) <= 1 for r in rows)
    assert [r["vs_1a"] != "" for r in rows] == [r["variant"] == "1E" for r in rows]
    if mlflow_available():  # the default store in the data folder; without the extra, no trace of MLflow
        assert meta["mlflow_tracking_uri"].value == settings().mlflow_tracking_uri
        assert (settings().data_dir / "mlflow.db").is_file()
    else:
        assert "mlflow_tracking_uri" not in meta


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


# ---------------------------------------------------------------- MLflow tracking

RUN_ID = "4f2c9a1e-7b3d-4e5f-8a6b-0c1d2e3f4a5b"  # a Dagster run id


@pytest.fixture(scope="module")
def small_comparison(tmp_path_factory):
    """A real comparison of two toy GRUs, variants 1A and 1E, trained for two epochs on a planted bank."""
    from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
    from lvm_pipeline.experiments.comparison import compare, trained_entry, write_comparison
    from lvm_pipeline.training.trainer import train
    from lvm_pipeline_tests.test_training import planted_bank, quick

    directory = tmp_path_factory.mktemp("comparison")
    sequences = build_sequences(planted_bank(directory / "bank"), spec=WindowSpec(max_context=8))
    entries = []
    for variant in ("1A", "1E"):
        model, recipe = VARIANTS[variant].apply(registered_configs()["toy_gru"](), quick(epochs=2))
        train(model, sequences, directory / variant, recipe, progress=False)
        entries.append(trained_entry(directory / variant, "gru", variant, sequences))
    comparison = compare(sequences, entries, n_resamples=50)
    return comparison, write_comparison(comparison, directory / "reports", RUN_ID)


def logged_runs(uri: str) -> list:
    """Every run of the lvm_pipeline experiment in the store at `uri`."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("lvm_pipeline").experiment_id])


def test_a_comparison_is_logged_as_a_parent_run_with_a_run_per_model(small_comparison, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from lvm_pipeline.config import settings
    from lvm_pipeline.experiments.tracking import log_comparison

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LVM_DATA_DIR", str(data_dir))
    comparison, files = small_comparison
    uri = settings().mlflow_tracking_uri
    assert uri == f"sqlite:///{data_dir.resolve() / 'mlflow.db'}"
    parent_id = log_comparison(comparison, files, RUN_ID, uri)
    assert (data_dir / "mlflow.db").is_file()

    runs = {run.info.run_name: run for run in logged_runs(uri)}
    assert sorted(runs) == ["comparison 4f2c9a1e", "gru-1A", "gru-1E"]
    parent = runs["comparison 4f2c9a1e"]
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert parent.data.tags["dagster_run_id"] == RUN_ID
    assert parent.data.tags["decision"] == comparison.benchmark.decision.decision
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id)}
    assert artifacts == {"experiment_comparison.md", "experiment_hit_at_k.png"}
    assert (data_dir / "mlartifacts").is_dir()  # beside the database, not ./mlruns of the working directory

    for name in ("gru-1A", "gru-1E"):
        run, entry = runs[name], next(e for e in comparison.entries if e.name == name)
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert tags["family"] == "gru" and tags["variant"] == entry.variant and tags["dagster_run_id"] == RUN_ID
        assert tags["dataset_version"] == entry.sidecar["dataset_version"]
        assert metrics["hit_at_5"] == pytest.approx(comparison.benchmark.results[name].estimates["hit_at_5"].value)
        assert metrics["hit_at_5_ci_low"] <= metrics["hit_at_5"] <= metrics["hit_at_5_ci_high"]
        assert metrics["n_queries"] == len(comparison.benchmark.queries)
        assert params["model.family"] == "gru" and params["train.epochs"] == "2"
        assert params["model.d_model"] == str(entry.sidecar["model_config"]["d_model"])
    assert "vs_1a" in runs["gru-1E"].data.metrics and "vs_1a" not in runs["gru-1A"].data.metrics  # only where paired
    assert runs["gru-1E"].data.metrics["vs_1a"] == pytest.approx(comparison.versus_reference["gru-1E"].value)
    assert runs["gru-1E"].data.params["train.hard_negatives"] == str(VARIANTS["1E"].train_changes["hard_negatives"])


def test_the_tracking_uri_is_the_environment_s_when_set(small_comparison, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from lvm_pipeline.config import settings
    from lvm_pipeline.experiments.tracking import log_comparison

    elsewhere = f"sqlite:///{tmp_path / 'elsewhere' / 'tracking.db'}"
    monkeypatch.setenv("LVM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    assert settings().mlflow_tracking_uri == elsewhere
    comparison, files = small_comparison
    for run_id in ("11111111-aaaa", "22222222-bbbb"):  # the experiment made once, then reused
        assert log_comparison(comparison, files, run_id, settings().mlflow_tracking_uri)
    assert not (tmp_path / "data").exists() and (tmp_path / "elsewhere" / "tracking.db").is_file()
    assert sorted(run.info.run_name for run in logged_runs(elsewhere)) == [
        "comparison 11111111", "comparison 22222222", "gru-1A", "gru-1A", "gru-1E", "gru-1E"]
