"""Dagster resources: the database, the encoder, the landing folder and alerts. Empty fields mean "from the environment"."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from lvm_pipeline import db
from lvm_pipeline.config import settings
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.validation.alerts import alert_message, write_alert


class PostgresResource(ConfigurableResource):
    """The application database (PostgreSQL + pgvector)."""

    url: str = Field(default="", description="Connection URL; empty: LVM_DATABASE_URL, else the embedded server.")

    def resolved_url(self) -> str:
        return self.url or db.database_url()

    @contextmanager
    def connect(self) -> Iterator:
        with db.connect(self.resolved_url()) as conn:
            yield conn


@lru_cache(maxsize=2)
def _load_encoder(model: str, device: str, batch_size: int) -> SentenceEncoder:
    return SentenceEncoder(model, device=device, batch_size=batch_size)


class EncoderResource(ConfigurableResource):
    """A sentence-transformers encoder, loaded once per process."""

    model: str = Field(default="", description="Model name or local path; empty: LVM_ENCODER, else packaged all-MiniLM-L6-v2.")
    device: str = Field(default="cpu", description="torch device, e.g. cpu or cuda")
    batch_size: int = Field(default=64, description="texts per forward pass")

    def get(self) -> SentenceEncoder:
        return _load_encoder(self.model or settings().encoder, self.device, self.batch_size)

    def for_bank(self, bank, log) -> SentenceEncoder | None:
        """The encoder if it is the bank's (encode_context and the echo loop need it), else None, with a warning."""
        loaded = self.get()
        if loaded.fingerprint == bank.manifest.get("encoder_fingerprint"):
            return loaded
        log.warning(f"the configured encoder {loaded.name} is not the bank's: encode_context and the echo loop are "
                    "left out of the evaluation")
        return None


class LandingResource(ConfigurableResource):
    """The folder where batch files land."""

    path: str = Field(default="", description="Landing folder; empty: $LVM_DATA_DIR/landing.")

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser().resolve() if self.path else settings().landing_dir


class AlertResource(ConfigurableResource):
    """Where gate alerts go: always the log and a JSON file; Slack too when SLACK_TOKEN is set."""

    directory: str = Field(default="", description="Alert JSON files; empty: $LVM_DATA_DIR/alerts.")
    slack_channel: str = Field(default="#lvm-oncall", description="Used when SLACK_TOKEN is set (needs dagster-slack).")

    def send(self, status, log) -> Path:
        config = settings()
        path = write_alert(Path(self.directory) if self.directory else config.alerts_dir, status)
        log.warning(f"{alert_message(status)} ({path})")
        if config.slack_token:
            from dagster_slack import SlackResource

            SlackResource(token=config.slack_token).get_client().chat_postMessage(
                channel=self.slack_channel, text=alert_message(status))
        return path
