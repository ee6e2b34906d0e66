"""Settings from the environment: where data lives, which database, which encoder.

| variable             | default                          | meaning                                        |
|----------------------|----------------------------------|------------------------------------------------|
| LVM_DATA_DIR         | ./data                           | landing/, exports/, postgres/ (embedded server) |
| LVM_DATABASE_URL     | unset: the embedded server       | an external PostgreSQL with pgvector            |
| LVM_ENCODER          | packaged all-MiniLM-L6-v2        | a sentence-transformers model name or path      |
| DAGSTER_PG_URL       | derived from the database above  | Dagster's instance storage (see dagster.yaml)   |
| LVM_VEC2TEXT_INVERSION, LVM_VEC2TEXT_CORRECTOR | unset | local vec2text weights: decoder_baseline adds a vec2text round trip |
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
    data_dir: Path
    database_url: str | None
    encoder: str
    vec2text_dirs: tuple[str, str] | None  # (inversion, corrector) weight directories

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
    def dagster_dir(self) -> Path:
        return self.data_dir / "dagster"


def settings() -> Settings:
    """Read the settings now (not at import), so tests and the CLI can change the environment."""
    return Settings(
        data_dir=Path(os.environ.get("LVM_DATA_DIR", "data")).expanduser().resolve(),
        database_url=os.environ.get("LVM_DATABASE_URL") or None,
        encoder=os.environ.get("LVM_ENCODER") or DEFAULT_ENCODER,
        vec2text_dirs=_vec2text_dirs(),
    )


def _vec2text_dirs() -> tuple[str, str] | None:
    inversion, corrector = os.environ.get("LVM_VEC2TEXT_INVERSION"), os.environ.get("LVM_VEC2TEXT_CORRECTOR")
    return (inversion, corrector) if inversion and corrector else None
