"""Expected failures: each says what happened and what to do. The CLI prints them on one line."""

from __future__ import annotations


class PipelineError(Exception):
    """An expected failure (bad input, missing database, mismatched encoder, ...), not a bug."""


class BatchNotFoundError(PipelineError, LookupError):
    """No batch of that id in the database."""


class DatabaseUnavailableError(PipelineError):
    """The database cannot be reached."""


class EncoderMismatchError(PipelineError):
    """The database already holds vectors of another encoder."""
