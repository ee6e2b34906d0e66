"""`lvm-pipeline sweep` on the planted bank of test_training: toy GRU trials of a few epochs, a real Optuna study in
SQLite, experiments.csv (and its migration to new columns), the saved config, pruning, and the test split unread."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences, save_sequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.experiments.comparison import CSV_COLUMNS, append_records
from lvm_pipeline.experiments.sweep import (
    SweepFiles,
    base_params,
    config_name,
    pipeline_recipe,
    run_sweep,
    saved_config,
    search_space,
    sweep_base,
)
from lvm_pipeline.models import FAMILY_NAMES
from lvm_pipeline.models.base import config_from_dict, registered_configs
from lvm_pipeline.training import TrainConfig, train
from lvm_pipeline.training.checkpoint import read_sidecar
from lvm_pipeline_tests.test_experiments import small_comparison  # noqa: F401 (a fixture: two toy GRUs compared)
from lvm_pipeline_tests.test_training import DIM, planted_bank

TOY = registered_configs()["toy_gru"]()


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: faster on one thread than on two contended cores


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    directory = tmp_path_factory.mktemp("planted")
    sequences = build_sequences(planted_bank(directory / "bank"), spec=WindowSpec(max_context=8))
    save_sequences(sequences, directory / "sequences")
    return sequences


def toy_recipe(**changes) -> TrainConfig:
    """A few epochs of a toy GRU on the planted bank (well under a second a trial)."""
    values = {"epochs": 3, "max_len": 8, "patience": None, "keep_best": 1, "val_max_queries": 300, "num_threads": 1,
              "time_budget_s": 20.0, "decay_over": "time_budget"}
    return TrainConfig(**(values | changes))


def sweep_files(directory, tracking: bool = False) -> SweepFiles:
    return SweepFiles(f"sqlite:///{directory / 'optuna.db'}", directory / "sweeps", directory / "experiments.csv",
                      directory / "configs", f"sqlite:///{directory / 'mlflow.db'}" if tracking else None)


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_sweep_trains_records_and_saves_each_trial_then_resumes_the_study(sequences, tmp_path):
    files, lines = sweep_files(tmp_path, tracking=True), []
    result = run_sweep(sequences, TOY, 3, toy_recipe(), files, "toy", pruner=optuna.pruners.NopPruner(),
                       echo=lines.append)
    study = optuna.load_study(study_name="toy", storage=files.storage)
    assert (tmp_path / "optuna.db").is_file() and [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    space = search_space(TOY, DIM)
    assert study.trials[0].params.items() >= base_params(space, TOY, toy_recipe()).items()  # trial 0: the base
    assert {"d_model", "n_layers", "lr", "batch_size", "hard_negatives"} <= set(study.trials[1].params)
    for trial in study.trials:  # its own folder, its configs the drawn ones, its value the best val Hit@5
        folder = tmp_path / "sweeps" / "toy" / f"trial-{trial.number:03d}"
        best = read_sidecar(folder / "best.json")
        assert trial.user_attrs["dir"] == str(folder) and (folder / "history.json").is_file()
        assert best["model_config"]["d_model"] == trial.params["d_model"]
        assert best["train_config"]["lr"] == trial.params["lr"] and trial.value == best["metrics"]["hit_at_5"]

    rows = csv_rows(files.csv)
    assert [(r["split"], r["study"], r["trial"], r["trial_state"]) for r in rows] == [
        ("val", "toy", str(n), "COMPLETE") for n in range(3)]
    for row, trial in zip(rows, study.trials):
        assert float(row["hit_at_5"]) == pytest.approx(trial.value) and row["name"] == f"toy/trial-{trial.number:03d}"
        assert json.loads(row["model_config"]) == trial.user_attrs["model_config"] and row["hit_at_5_ci_low"] == ""
        assert int(row["n_queries"]) == len(sequences.windows["val"]) and row["dataset_version"] == sequences.version

    assert result.best.number == study.best_trial.number and result.saved == tmp_path / "configs" / "sweep_toy.json"
    model, recipe_fields = saved_config(config_name("toy"), files.configs_dir)
    best = study.best_trial
    assert model == config_from_dict(best.user_attrs["model_config"]) == replace(
        TOY, **{d.name: best.params[d.name] for d in space if d.of == "model"})
    assert recipe_fields == {k: best.params[k] for k in ("lr", "infonce_alpha", "infonce_temperature", "batch_size",
                                                          "hard_negatives")}
    assert json.loads(result.saved.read_text())["val_hit_at_5"] == best.value
    assert [line.split()[:3] for line in lines[:3]] == [["trial", str(n), "COMPLETE"] for n in range(3)]
    assert f"best: trial {best.number}, val Hit@5" in lines[-2] and str(result.saved) in lines[-1]

    from mlflow import MlflowClient  # the `mlflow` extra is installed in this project's test environment

    client = MlflowClient(files.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("lvm_pipeline_sweeps").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"toy/trial-00{n}" for n in range(3)]
    assert all(r.data.tags["split"] == "val" and r.data.tags["trial_state"] == "COMPLETE" for r in runs)
    first = next(r for r in runs if r.info.run_name == "toy/trial-000")
    assert first.data.metrics["best_val_hit_at_5"] == pytest.approx(study.trials[0].value)
    assert len(client.get_metric_history(first.info.run_id, "val_hit_at_5")) == 3  # one per epoch

    run_sweep(sequences, TOY, 2, toy_recipe(), files, "toy", pruner=optuna.pruners.NopPruner(), echo=lines.append)
    study = optuna.load_study(study_name="toy", storage=files.storage)
    assert [t.number for t in study.trials] == list(range(5)) and len(csv_rows(files.csv)) == 5
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 5  # a resumed sampler draws anew
    assert sorted(p.name for p in (tmp_path / "sweeps" / "toy").iterdir()) == [f"trial-00{n}" for n in range(5)]
    with pytest.raises(PipelineError, match="ran with another base"):  # a study is resumed with its own setup only
        run_sweep(sequences, replace(TOY, d_model=48), 1, toy_recipe(), files, "toy", echo=lines.append)


class ReadTestSplit(AssertionError):
    pass


class WithoutTest(Mapping):
    """A split -> value mapping whose test entry raises when read."""

    def __init__(self, splits: Mapping):
        self.splits = splits

    def __getitem__(self, split):
        if split == "test":
            raise ReadTestSplit("the sweep read the test split")
        return self.splits[split]

    def __iter__(self):
        return iter(self.splits)

    def __len__(self):
        return len(self.splits)


def test_the_objective_never_reads_the_test_split(sequences, tmp_path, caplog):
    guarded = replace(sequences, windows=WithoutTest(sequences.windows), articles=WithoutTest(sequences.articles))
    with pytest.raises(ReadTestSplit):  # the guard works: what reaches test windows or articles fails
        guarded.article_bounds("test")
    (tmp_path / "not-a-folder").write_text("")  # and an MLflow store that cannot be made: a warning, not a failure
    files = replace(sweep_files(tmp_path), tracking_uri=f"sqlite:///{tmp_path / 'not-a-folder' / 'mlflow.db'}")
    result = run_sweep(guarded, TOY, 2, toy_recipe(epochs=2), files, "guarded", echo=lambda _: None)
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 2 and result.best is not None
    assert len(csv_rows(files.csv)) == 2 and caplog.text.count("not logged to MLflow") == 2


def test_a_pruned_trial_stops_training_and_leaves_a_run_that_resumes(sequences, tmp_path):
    files, lines = sweep_files(tmp_path), []
    recipe = toy_recipe(epochs=5)
    pruner = optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=2)  # Hit@5 <= 1: pruned at epoch 2
    result = run_sweep(sequences, TOY, 1, recipe, files, "pruned", pruner=pruner, echo=lines.append)
    (trial,) = result.study.trials
    assert trial.state == TrialState.PRUNED and sorted(trial.intermediate_values) == [1, 2]
    folder = tmp_path / "sweeps" / "pruned" / "trial-000"
    history = json.loads((folder / "history.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2]  # of 5
    assert read_sidecar(folder / "best.json")["metrics"]["hit_at_5"] == max(e["val_hit_at_5"] for e in history)
    assert [(r["trial_state"], r["split"]) for r in csv_rows(files.csv)] == [("PRUNED", "val")]
    assert result.best is None and not files.configs_dir.exists() and lines[-1] == "no trial complete: no config saved"
    # the pruned run's files are a consistent run: it resumes from its last checkpoint to the configured epochs
    model, train_config = (config_from_dict(trial.user_attrs["model_config"]),
                           TrainConfig.from_dict(trial.user_attrs["train_config"]))
    resumed = train(model, sequences, folder, train_config, resume=True, progress=False)
    assert [e["epoch"] for e in resumed.history] == [1, 2, 3, 4, 5] and resumed.history[:2] == history


OLD_HEADER = ("recorded_at", "run_id", "name", "family", "variant", "dataset_version", "encoder_fingerprint",
              "n_queries", "hit_at_1", "hit_at_5", "hit_at_5_ci_low", "hit_at_5_ci_high", "hit_at_10", "cosine",
              "vs_best_baseline", "vs_1a", "model_config", "train_config")  # experiments.csv before sweeps


def test_an_experiments_csv_with_an_older_header_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "experiments.csv"
    header = (*OLD_HEADER, "note")  # and a column of its own
    old = [{c: f"{c}-{i}" for c in header} for i in range(2)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(old)
    new = {"run_id": "r", "split": "val", "name": "toy/trial-000", "hit_at_5": 0.5, "model_config": {"family": "gru"},
           "study": "toy", "trial": 0, "trial_state": "COMPLETE", "variant": None}
    append_records(path, [new])
    append_records(path, [new])  # the header now matches: appended, not rewritten
    with open(path, newline="") as f:
        assert next(csv.reader(f)) == [*CSV_COLUMNS, "note"]
    rows = csv_rows(path)
    assert rows[:2] == [row | {c: "" for c in CSV_COLUMNS if c not in OLD_HEADER} for row in old]
    assert rows[2] == rows[3] and rows[2]["split"] == "val" and rows[2]["recorded_at"] and rows[2]["variant"] == ""
    assert json.loads(rows[2]["model_config"]) == {"family": "gru"} and rows[2]["note"] == ""


def test_a_comparison_appends_test_rows(small_comparison):  # noqa: F811
    comparison, files = small_comparison
    rows = csv_rows(files["csv"])
    assert [(r["name"], r["split"], r["trial_state"]) for r in rows] == [(e.name, "test", "") for e in comparison.entries]


def test_the_base_is_the_pipeline_s_recipe_and_small_config_and_family_fields_are_searched_where_they_exist():
    from lvm_pipeline.defs.training import LvmCheckpointConfig, named_config, recipe

    for seconds in (0, 25.0):
        assert pipeline_recipe(seconds, seed=3) == recipe(LvmCheckpointConfig(time_budget_s=seconds, seed=3))
    for family in FAMILY_NAMES:
        for text_view in (True, False):
            base = sweep_base(family, text_view)
            assert base == named_config(LvmCheckpointConfig(text_view=text_view), family)[0]
    transformer, mamba2 = ({d.name for d in search_space(sweep_base(f), DIM)} for f in ("transformer", "mamba2"))
    gru = {d.name: d for d in search_space(sweep_base("gru"), DIM)}
    assert {"n_heads", "mlp_ratio"} <= transformer and not {"d_state", "n_slots"} & transformer
    assert {"d_state", "expand"} <= mamba2 and "n_heads" not in mamba2
    assert gru["d_model"].choices == (128, 256, 512) and not {"n_heads", "d_state", "n_slots"} & set(gru)
    base = sweep_base("gru")  # the pipeline's values lie in the space: trial 0 of a new study is exactly the base
    assert set(base_params(tuple(gru.values()), base, pipeline_recipe(25.0))) == set(gru)


def test_the_command_sweeps_the_data_folder_s_sequences(tmp_path, monkeypatch, capsys):
    from lvm_pipeline import cli
    from lvm_pipeline.config import settings

    monkeypatch.setenv("LVM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exports = settings().exports_dir
    save_sequences(build_sequences(planted_bank(exports), spec=WindowSpec(max_context=8)), exports / "sequences")
    args = ["sweep", "--family", "gru", "--trials", "2", "--train-seconds", "1", "--no-text-view"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[:2]] == [["trial", "0"], ["trial", "1"]]
    data = tmp_path / "data"
    assert out[2] == f"study gru-sweep (sqlite:///{data / 'optuna.db'}): 2 trials (2 complete)"
    assert out[-1] == f"saved as config sweep_gru: {data / 'configs' / 'sweep_gru.json'}"
    assert len(csv_rows(settings().reports_dir / "experiments.csv")) == 2
    assert (settings().checkpoints_dir / "sweeps" / "gru-sweep" / "trial-001" / "best.json").is_file()
    monkeypatch.setenv("OPTUNA_STORAGE", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert SweepFiles.of(settings()).storage == f"sqlite:///{tmp_path / 'elsewhere.db'}"
