"""The request bodies the service accepts, and the caps on them: anything else is a `BadInput` (a 4xx)."""

from __future__ import annotations

import json

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lvm_pipeline.inference import ContextQuery

MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_SENTENCES = 64  # sentences (or vectors) of one context
MAX_SENTENCE_CHARS = 4000
MAX_K = 100


class BadInput(Exception):
    """A request the service refuses: `status` (4xx) and the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class ContextBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] | None = Field(default=None, max_length=MAX_SENTENCES)
    vectors: list[list[float]] | None = Field(default=None, max_length=MAX_SENTENCES)
    views: list[list[float]] | None = Field(default=None, max_length=MAX_SENTENCES)  # with vectors: each one's view
    k: int = Field(default=5, ge=1, le=MAX_K)
    exclude_context: bool = False


def _no_constant(name: str) -> float:
    raise BadInput(422, f"{name} is not a number JSON allows")


def parse_body(raw: bytes) -> ContextBody:
    """The body as JSON text (UTF-8) of a `ContextBody`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(400, f"the body is not UTF-8: byte 0x{raw[error.start]:02x} at position {error.start}") from None
    try:
        data = orjson.loads(text)  # several times the standard parser's speed on arrays of numbers
    except orjson.JSONDecodeError:
        try:  # the standard parser for the reason: its messages, and NaN/Infinity told apart
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as error:
            raise BadInput(400, f"the body is not JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(data, dict):
        raise BadInput(422, "the body must be a JSON object")
    try:
        return ContextBody.model_validate(data)
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:5])
        raise BadInput(422, reasons) from None


def context_query(body: ContextBody, dimension: int, needs_texts: bool) -> ContextQuery:
    """The body as the predictor's question, checked against the caps and the bank's dimension."""
    if (body.texts is None) == (body.vectors is None):
        raise BadInput(422, "give exactly one of texts and vectors")
    if body.views is not None and body.vectors is None:
        raise BadInput(422, "views go with vectors: texts are viewed by the service")
    if body.texts is not None:
        too_long = next((i for i, s in enumerate(body.texts) if len(s) > MAX_SENTENCE_CHARS), None)
        if too_long is not None:
            raise BadInput(422, f"texts[{too_long}] is over {MAX_SENTENCE_CHARS} characters")
        if not any(s.strip() for s in body.texts):
            raise BadInput(422, "give at least one non-empty sentence of context")
        return ContextQuery.of_texts(body.texts, body.k, body.exclude_context)
    if body.views is None and needs_texts:
        raise BadInput(422, "this model reads the text view of its context: give texts, or vectors with their views")
    vectors = _finite_matrix(body.vectors, "vectors", dimension)
    views = _finite_matrix(body.views, "views", dimension) if body.views is not None and needs_texts else None
    if views is not None and len(views) != len(vectors):
        raise BadInput(422, f"{len(views)} views for {len(vectors)} vectors: give one view per vector")
    return ContextQuery(vectors=vectors, views=views, k=body.k, exclude_context=body.exclude_context)


def _finite_matrix(rows: list[list[float]], name: str, dimension: int) -> np.ndarray:
    """(L, dimension) float32 of finite numbers, at least one row."""
    if not rows:
        raise BadInput(422, f"give at least one context vector in {name}")
    wrong = next((i for i, v in enumerate(rows) if len(v) != dimension), None)
    if wrong is not None:
        raise BadInput(422, f"{name}[{wrong}] has {len(rows[wrong])} dimensions, the bank {dimension}")
    with np.errstate(over="ignore"):  # a number past float32's range becomes inf, refused below
        matrix = np.asarray(rows, dtype=np.float32)
    if not np.all(np.isfinite(matrix)):
        raise BadInput(422, f"{name} must be finite float32 numbers (no NaN, infinity or overflow)")
    return matrix
