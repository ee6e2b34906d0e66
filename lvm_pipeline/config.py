"""Settings from the environment: the only module that reads it (every variable is in the README's table).

`settings()` reads the environment when called, not at import, so tests and the CLI can change it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
APP_DATABASE = "lvm"
DAGSTER_DATABASE = "dagster"


@dataclass(frozen=True)
class Settings:
    data_dir: Path  # LVM_DATA_DIR
    database_url: str | None  # LVM_DATABASE_URL; None: the embedded server
    encoder: str  # LVM_ENCODER
    vec2text_dirs: tuple[str, str] | None  # LVM_VEC2TEXT_INVERSION, LVM_VEC2TEXT_CORRECTOR
    dagster_home: Path | None  # DAGSTER_HOME: the folder holding dagster.yaml
    dagster_pg_url: str | None  # DAGSTER_PG_URL: Dagster's instance storage
    dagster_dir: Path  # LVM_DAGSTER_DIR: Dagster's compute logs and artifacts
    slack_token: str | None  # SLACK_TOKEN: gate alerts to Slack too
    llm_api_key: str | None  # LVM_LLM_API_KEY: the LLM TMD assigner's key
    mlflow_tracking_uri: str  # MLFLOW_TRACKING_URI, else a SQLite store in the data folder (the `mlflow` extra)
    optuna_storage: str  # OPTUNA_STORAGE, else a SQLite file in the data folder (`lvm-pipeline sweep`)
    api_token: str | None = None  # LVM_API_TOKEN: `lvm-pipeline serve` wants it as a bearer token
    serve_spec: str | None = None  # LVM_SERVE_SPEC: set by `serve` for its worker processes (JSON), not by hand

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def alerts_dir(self) -> Path:
        return self.data_dir / "alerts"

    @property
    def llm_cache_dir(self) -> Path:
        return self.data_dir / "llm_cache"


def settings() -> Settings:
    """The settings as the environment says now."""
    data_dir = _path("LVM_DATA_DIR") or Path("data").resolve()
    inversion, corrector = _get("LVM_VEC2TEXT_INVERSION"), _get("LVM_VEC2TEXT_CORRECTOR")
    return Settings(
        data_dir=data_dir,
        database_url=_get("LVM_DATABASE_URL"),
        encoder=_get("LVM_ENCODER") or DEFAULT_ENCODER,
        vec2text_dirs=(inversion, corrector) if inversion and corrector else None,
        dagster_home=_path("DAGSTER_HOME"),
        dagster_pg_url=_get("DAGSTER_PG_URL"),
        dagster_dir=_path("LVM_DAGSTER_DIR") or data_dir / "dagster",
        slack_token=_get("SLACK_TOKEN"),
        llm_api_key=_get("LVM_LLM_API_KEY"),
        mlflow_tracking_uri=_get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir.resolve() / 'mlflow.db'}",
        optuna_storage=_get("OPTUNA_STORAGE") or f"sqlite:///{data_dir.resolve() / 'optuna.db'}",
        api_token=_get("LVM_API_TOKEN"),
        serve_spec=_get("LVM_SERVE_SPEC"),
    )


def export_dagster_environment(home: Path, storage_url: str, dagster_dir: Path) -> None:
    """Set the variables dagster.yaml reads (for this process and the runs it starts)."""
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["DAGSTER_PG_URL"] = storage_url
    os.environ["LVM_DAGSTER_DIR"] = str(dagster_dir)


def hub_offline() -> None:
    """Never reach a model hub: models come from installed packages or local paths."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _get(name: str) -> str | None:
    return os.environ.get(name) or None


def _path(name: str) -> Path | None:
    value = _get(name)
    return Path(value).expanduser().resolve() if value else None
