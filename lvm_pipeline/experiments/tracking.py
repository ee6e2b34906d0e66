"""Optional MLflow tracking of experiment comparisons (the `mlflow` extra; without it nothing is logged).

Each comparison is a parent run holding the comparison's markdown and plot as artifacts, with one nested run per
trained model: the fields of its experiments.csv row as tags (family, variant, dataset version, encoder), params
(model.* and train.* from its configs) and metrics (Hit@K with the Hit@5 CI, cosine, paired differences).

The store is `settings().mlflow_tracking_uri`: MLFLOW_TRACKING_URI when set (a server, or any database MLflow
takes), else the SQLite database <data dir>/mlflow.db, with artifacts in <data dir>/mlartifacts beside it. MLflow 3
refuses its older ./mlruns file store unless told otherwise, so none is used here."""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

from lvm_pipeline.experiments.comparison import Comparison, entry_record

SQLITE = "sqlite:///"
TAGS = ("family", "variant", "dataset_version", "encoder_fingerprint")
METRICS = ("n_queries", "hit_at_1", "hit_at_5", "hit_at_5_ci_low", "hit_at_5_ci_high", "hit_at_10", "cosine",
           "vs_best_baseline", "vs_1a")


def mlflow_available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def flat_params(config: dict | None, prefix: str, max_length: int) -> dict[str, str]:
    """{prefix + dotted key: value as text (JSON unless a string), cut to max_length} of a nested config."""
    params = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            params |= flat_params(value, f"{prefix}{key}.", max_length)
        else:
            params[f"{prefix}{key}"] = (value if isinstance(value, str) else json.dumps(value))[:max_length]
    return params


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix(SQLITE)).resolve() if uri.startswith(SQLITE) else None


def _client_and_experiment(uri: str, experiment: str):
    """The MLflow client of the store at `uri` and the id of `experiment` in it (created, its artifacts beside a
    SQLite database rather than in MLflow's default ./mlruns of whatever the working directory is)."""
    from mlflow import MlflowClient

    if database := sqlite_path(uri):
        database.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=(database.parent / "mlartifacts").as_uri() if database else None)
    return client, experiment_id


def _log_configs(client, run: str, record: dict) -> None:
    """A record's model and training configs as the run's params `model.*` and `train.*`, in MLflow's batch sizes."""
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    params = [Param(k, v) for k, v in (flat_params(record["model_config"], "model.", MAX_PARAM_VAL_LENGTH)
                                       | flat_params(record["train_config"], "train.", MAX_PARAM_VAL_LENGTH)).items()]
    for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run, params=params[start:start + MAX_PARAMS_TAGS_PER_BATCH])


def log_comparison(c: Comparison, files: dict[str, Path], run_id: str, uri: str,
                   experiment: str = "lvm_pipeline") -> str | None:
    """Log the comparison (see the module doc) to the store at `uri` under `experiment`; the parent run's id, None
    without mlflow."""
    if not mlflow_available():
        return None
    from mlflow.entities import Metric
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client, experiment_id = _client_and_experiment(uri, experiment)
    parent = client.create_run(experiment_id, run_name=f"comparison {run_id[:8]}", tags={
        "dagster_run_id": run_id, "decision": c.benchmark.decision.decision}).info.run_id
    status = "FAILED"
    try:
        for key in ("markdown", "plot"):
            client.log_artifact(parent, str(files[key]))
        now = int(time.time() * 1000)
        for entry in c.entries:
            record = entry_record(c, entry)
            child = client.create_run(experiment_id, run_name=record["name"], tags={
                "dagster_run_id": run_id, MLFLOW_PARENT_RUN_ID: parent,
                **{k: str(record[k]) for k in TAGS if record[k] is not None}}).info.run_id
            _log_configs(client, child, record)
            client.log_batch(child, metrics=[Metric(k, float(record[k]), now, 0) for k in METRICS
                                             if record[k] is not None and math.isfinite(record[k])])
            client.set_terminated(child)
        status = "FINISHED"
    finally:
        client.set_terminated(parent, status)
    return parent


def log_trial(record: dict, history: list[dict], uri: str, experiment: str = "lvm_pipeline_sweeps") -> str | None:
    """Log a sweep trial, its experiments.csv fields `record` and its trainer history, to the store at `uri` under
    `experiment` as a run named like its row: tags (study, trial, state, family, versions), params (model.* and
    train.*), its best val figures as best_val_* metrics and every epoch's val figures as steps; the run's id, None
    without mlflow. A pruned trial's run ends KILLED."""
    if not mlflow_available():
        return None
    from mlflow.entities import Metric

    client, experiment_id = _client_and_experiment(uri, experiment)
    tags = ("study", "trial", "trial_state", "split", "family", "dataset_version", "encoder_fingerprint")
    run = client.create_run(experiment_id, run_name=record["name"], tags={
        k: str(record[k]) for k in tags if record.get(k) is not None}).info.run_id
    _log_configs(client, run, record)
    now = int(time.time() * 1000)
    figures = ("hit_at_1", "hit_at_5", "hit_at_10", "cosine")
    best = [Metric(f"best_val_{k}", float(record[k]), now, 0) for k in figures]
    steps = [Metric(f"val_{k}", float(entry[f"val_{k}"]), now, entry["epoch"]) for entry in history for k in figures]
    client.log_batch(run, metrics=[m for m in best + steps if math.isfinite(m.value)])
    client.set_terminated(run, "FINISHED" if record["trial_state"] == "COMPLETE" else "KILLED")
    return run
