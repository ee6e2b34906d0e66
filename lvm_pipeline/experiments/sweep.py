"""`lvm-pipeline sweep`: a family's hyperparameters searched with Optuna, judged on val Hit@5 only.

Each trial draws a model config (width, depth, dropout, and the family's own fields where its config class has
them) and a recipe (learning rate, InfoNCE weight and temperature, batch size, hard negatives) around the family's
`_small` config and the pipeline's recipe (trial 0 of a new study is that base itself). It trains under the
wall-clock budget into `<checkpoints>/sweeps/<study>/trial-NNN` and reports val Hit@5 after every epoch to the
pruner (median by default), which stops a trial that falls behind the others at the same epoch. The objective is
the trial's best val Hit@5, the trainer's own validation: the test split is never read, so the report's test
figures stay out of the search.

The study lives in an Optuna storage (SQLite in the data folder by default) and resumes: running again adds trials
to it. Each finished or pruned trial is a row of experiments.csv (split "val") and, with mlflow, a run; the best
trial's configs are saved as the named config `sweep_<study>` (`saved_config` reads it back).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from lvm_pipeline.config import Settings
from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.experiments.comparison import append_records
from lvm_pipeline.experiments.tracking import log_trial
from lvm_pipeline.files import atomic_write
from lvm_pipeline.models.base import ModelConfig, build_model, config_from_dict, registered_configs
from lvm_pipeline.training.checkpoint import checkpoint_files, read_sidecar
from lvm_pipeline.training.config import PIPELINE_RECIPE, TrainConfig
from lvm_pipeline.training.trainer import HISTORY_FILE, train

log = logging.getLogger(__name__)

CONFIG_PREFIX = "sweep_"  # the best trial's named config: sweep_<study without its -sweep suffix>
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a study name is a folder name
RECORDED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that become rows of experiments.csv
SETUP_ATTR = "setup"  # the study's user attribute: what every trial of it shares (a resumed study must match)
FREE_ON_RESUME = frozenset({"device", "num_threads", "seed"})  # recipe fields a resumed study may change
VAL_FIGURES = ("hit_at_1", "hit_at_5", "hit_at_10", "cosine")


@dataclass(frozen=True)
class Dimension:
    """One searched field of the model config (`of` "model") or the recipe ("recipe"): `choices`, or a range
    [low, high] (integers if both are ints; log-uniform if `log`)."""

    name: str
    of: str
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def suggest(self, trial: optuna.Trial):
        if self.choices:
            return trial.suggest_categorical(self.name, self.choices)
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def holds(self, value) -> bool:
        return value in self.choices if self.choices else self.low <= value <= self.high


WIDTH_FACTORS = (0.5, 1.0, 2.0)  # d_model: half, the same as and twice the base's
SHARED = (  # what every family config has, then the recipe's fields (the pipeline's values lie inside)
    Dimension("n_layers", "model", low=1, high=4),
    Dimension("dropout", "model", low=0.0, high=0.3),
    Dimension("lr", "recipe", low=3e-4, high=1e-2, log=True),
    Dimension("infonce_alpha", "recipe", low=0.0, high=2.0),
    Dimension("infonce_temperature", "recipe", low=0.02, high=0.2, log=True),
    Dimension("batch_size", "recipe", choices=(64, 128, 256)),
    Dimension("hard_negatives", "recipe", choices=(0, 8)),
)
FAMILY_FIELDS = (  # searched in a family whose config class has the field, keeping the values that build
    Dimension("n_heads", "model", choices=(2, 4, 8)),
    Dimension("mlp_ratio", "model", choices=(2.0, 4.0)),
    Dimension("d_state", "model", choices=(32, 64, 128)),
    Dimension("expand", "model", choices=(1, 2)),
    Dimension("attention_every", "model", choices=(2, 4)),
    Dimension("n_slots", "model", choices=(8, 16, 32)),
    Dimension("slot_dim", "model", choices=(32, 64)),
    Dimension("denoiser_layers", "model", choices=(1, 2, 3)),
)
RECIPE_FIELDS = tuple(d.name for d in SHARED if d.of == "recipe")


def pipeline_recipe(train_seconds: float | None, seed: int = 0) -> TrainConfig:
    """The recipe `lvm_checkpoint` trains a family with (`PIPELINE_RECIPE`, its Config's defaults), under a
    wall-clock budget of `train_seconds` (None or 0: none)."""
    return replace(PIPELINE_RECIPE, seed=seed, time_budget_s=train_seconds or None,
                   decay_over="time_budget" if train_seconds else "epochs")


def sweep_base(family: str, text_view: bool = True) -> ModelConfig:
    """The config a family's sweep starts from: `<family>_small`, with the text view as lvm_checkpoint gives it."""
    configs = registered_configs()
    if f"{family}_small" not in configs:
        raise PipelineError(f"no {family}_small config is registered: the {family} family cannot be swept yet")
    return replace(configs[f"{family}_small"](), text_view=text_view)


def search_space(base: ModelConfig, d_input: int) -> tuple[Dimension, ...]:
    """The dimensions searched around `base`: the widths that build, the shared fields, and each family field the
    config class has, with the choices that build at every width (the others at the base's values)."""
    has = {f.name for f in fields(base)}
    widths = dict.fromkeys(max(round(base.d_model * factor), 1) for factor in WIDTH_FACTORS)
    widths = tuple(w for w in widths if _builds(replace(base, d_model=w), d_input))
    family = [replace(d, choices=tuple(v for v in d.choices if all(
        _builds(replace(base, d_model=w, **{d.name: v}), d_input) for w in widths)))
        for d in FAMILY_FIELDS if d.name in has]
    return (Dimension("d_model", "model", choices=widths), *SHARED, *(d for d in family if d.choices))


def _builds(config: ModelConfig, d_input: int) -> bool:
    try:
        build_model(config, d_input)
    except ValueError:
        return False
    return True


def trial_configs(trial: optuna.Trial, space: tuple[Dimension, ...], base: ModelConfig,
                  recipe: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """The model config and recipe of `trial`: the base ones with every dimension drawn."""
    drawn = {d: d.suggest(trial) for d in space}
    return (replace(base, **{d.name: v for d, v in drawn.items() if d.of == "model"}),
            replace(recipe, **{d.name: v for d, v in drawn.items() if d.of == "recipe"}))


def base_params(space: tuple[Dimension, ...], base: ModelConfig, recipe: TrainConfig) -> dict:
    """The base config's and recipe's values of the dimensions that hold them (trial 0 of a new study)."""
    values = {d.name: getattr(base if d.of == "model" else recipe, d.name) for d in space}
    return {d.name: values[d.name] for d in space if d.holds(values[d.name])}


@dataclass(frozen=True)
class SweepFiles:
    """Where a sweep keeps what it makes."""

    storage: str  # the Optuna storage URL
    trials_dir: Path  # a folder per study, a trial-NNN folder (a training run) per trial
    csv: Path  # experiments.csv, a row per finished or pruned trial
    configs_dir: Path  # the best trial's named config
    tracking_uri: str | None = None  # the MLflow store (None: none)

    @classmethod
    def of(cls, s: Settings) -> SweepFiles:
        """The data folder's: OPTUNA_STORAGE, else sqlite:///<data_dir>/optuna.db; <checkpoints>/sweeps;
        <reports>/experiments.csv; <data_dir>/configs; the settings' MLflow store."""
        return cls(s.optuna_storage, s.checkpoints_dir / "sweeps", s.reports_dir / "experiments.csv", s.data_dir / "configs",
                   s.mlflow_tracking_uri)


@dataclass
class SweepResult:
    study: optuna.Study
    best: FrozenTrial | None  # the best complete trial of the whole study (None: none complete yet)
    saved: Path | None  # the best trial's named config (None: none complete yet)


def config_name(study: str) -> str:
    """The named config of a study's best trial: sweep_gru for the default study gru-sweep, sweep_<study> else."""
    return CONFIG_PREFIX + study.removesuffix("-sweep")


def run_sweep(sequences: TrainingSequences, base: ModelConfig, trials: int, recipe: TrainConfig, files: SweepFiles,
              study_name: str = "", views: np.ndarray | None = None, pruner: optuna.pruners.BasePruner | None = None,
              echo: Callable[[str], None] = print) -> SweepResult:
    """Add `trials` trials to the study `study_name` (default `<family>-sweep`; created, or resumed if its setup
    matches) around `base` and `recipe` (whose seed seeds the sampler too); `views`: the bank's context views, for
    a base with the text view; `pruner` (default: median on val Hit@5 from the third trial and epoch on). One line
    per trial to `echo`, then the study's best trial, saved as a named config."""
    family = base.family
    study_name = study_name or f"{family}-sweep"
    if not STUDY_NAME.fullmatch(study_name):
        raise PipelineError(f"a study name is letters, digits, '_', '.' and '-' (a folder name), not {study_name!r}")
    if base.text_view and views is None:
        raise PipelineError(f"{family} reads the text view: sweep it with the bank's context views")
    space = search_space(base, sequences.bank.vectors.shape[1])
    study = _study(study_name, files.storage, recipe.seed, pruner or optuna.pruners.MedianPruner(
        n_startup_trials=3, n_warmup_steps=2))
    setup = {"base": base.to_dict(), "dataset_version": sequences.version,
             **{k: v for k, v in recipe.to_dict().items() if k not in set(RECIPE_FIELDS) | FREE_ON_RESUME}}
    if (earlier := study.user_attrs.get(SETUP_ATTR)) is None:
        study.set_user_attr(SETUP_ATTR, setup)
        study.enqueue_trial(base_params(space, base, recipe))
    elif differ := [k for k in setup if setup[k] != earlier.get(k)]:
        raise PipelineError(f"study {study_name} in {files.storage} ran with another {', '.join(differ)}: resume it "
                            "with the same, or name another study (--study)")
    run_id, trials_dir = str(uuid.uuid4()), files.trials_dir / study_name

    def objective(trial: optuna.Trial) -> float:
        model, train_config = trial_configs(trial, space, base, recipe)
        out_dir = trials_dir / f"trial-{trial.number:03d}"
        trial.set_user_attr("dir", str(out_dir))
        trial.set_user_attr("model_config", model.to_dict())
        trial.set_user_attr("train_config", train_config.to_dict())

        def report(entry: dict) -> None:
            trial.report(entry["val_hit_at_5"], entry["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"val Hit@5 {entry['val_hit_at_5']:.1%} at epoch {entry['epoch']}")

        result = train(model, sequences, out_dir, train_config, model_name=f"{study_name}/{out_dir.name}",
                       progress=False, on_epoch_end=report, views=views)
        return result.best_metrics["hit_at_5"]

    def record(_study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state not in RECORDED:
            return
        out_dir = Path(trial.user_attrs["dir"])
        sidecar = read_sidecar(checkpoint_files(out_dir, "best")[".json"])
        history = json.loads((out_dir / HISTORY_FILE).read_text())
        row = trial_row(sidecar, study_name, trial, run_id)
        append_records(files.csv, [row])
        if files.tracking_uri:
            try:  # experiments.csv is the record; a tracking store that is down only costs its copy
                log_trial(row, history, files.tracking_uri)
            except Exception as error:  # any MLflow or network failure
                log.warning("trial %d not logged to MLflow at %s: %r", trial.number, files.tracking_uri, error)
        echo(f"trial {trial.number:3d} {trial.state.name:<8} val Hit@5 {row['hit_at_5']:6.1%}  "
             f"{len(history):2d} epochs {trial.duration.total_seconds():5.0f} s  {describe(trial.params)}")

    study.optimize(objective, n_trials=trials, callbacks=[record])
    return _finish(study, files, echo)


def _study(name: str, storage: str, seed: int, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The study `name` in `storage`, created or loaded. The sampler's seed is offset by the trials the study
    holds, so a resumed study draws new points instead of the ones its first run drew."""
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", pruner=pruner,
                                load_if_exists=True)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
    return study


def trial_row(sidecar: dict, study: str, trial: FrozenTrial, run_id: str) -> dict:
    """A trial's experiments.csv fields: its best checkpoint's val figures and configs, split "val"."""
    metrics = sidecar["metrics"]
    return {"run_id": run_id, "split": "val", "name": sidecar["model_name"], "family": sidecar["model_config"]["family"],
            "variant": None, "dataset_version": sidecar["dataset_version"],
            "encoder_fingerprint": sidecar["encoder_fingerprint"], "n_queries": sidecar["val_queries"],
            **{k: metrics[k] for k in VAL_FIGURES}, "model_config": sidecar["model_config"],
            "train_config": sidecar["train_config"], "study": study, "trial": trial.number,
            "trial_state": trial.state.name}


def _finish(study: optuna.Study, files: SweepFiles, echo: Callable[[str], None]) -> SweepResult:
    """Save the study's best complete trial as a named config, and say so."""
    states = [t.state for t in study.trials]
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s))
    echo(f"study {study.study_name} ({files.storage}): {len(states)} trials ({counts})")
    if TrialState.COMPLETE not in states:
        echo("no trial complete: no config saved")
        return SweepResult(study, None, None)
    best = study.best_trial
    name = config_name(study.study_name)
    saved = {"model_config": best.user_attrs["model_config"], "train_config": best.user_attrs["train_config"],
             "val_hit_at_5": best.value, "study": study.study_name, "trial": best.number}
    path = atomic_write(files.configs_dir / f"{name}.json", lambda f: f.write(json.dumps(saved, indent=2).encode()))
    echo(f"best: trial {best.number}, val Hit@5 {best.value:.1%}: {describe(best.params)}")
    echo(f"saved as config {name}: {path}")
    return SweepResult(study, best, path)


def describe(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def saved_config(name: str, directory: Path) -> tuple[ModelConfig, dict]:
    """The model config and the tuned recipe fields (RECIPE_FIELDS) of the named config `name` in `directory`."""
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise PipelineError(f"no saved config {name} in {directory}: run lvm-pipeline sweep first")
    saved = json.loads(path.read_text())
    return config_from_dict(saved["model_config"]), {k: saved["train_config"][k] for k in RECIPE_FIELDS}
