"""TMD label assigners: a zero-shot one over stored vectors and an LLM one over text.

Both return `Labels` with `UNKNOWN` (-1) wherever the confidence is below the threshold or the
answer could not be had: never a silent 0 (code 0 is Science / Definition / Historical).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import requests

from lvm_pipeline.tmd.domain_prototypes import default_domain_prototypes
from lvm_pipeline.tmd.gist import article_gist
from lvm_pipeline.tmd.prototypes import PrototypeScorer
from lvm_pipeline.tmd.schema import DOMAINS, MODIFIERS, TASKS, UNKNOWN, Label

log = logging.getLogger(__name__)

ZERO_SHOT_THRESHOLD = 0.3
ZERO_SHOT_TEMPERATURE = 0.03
DOMAIN_TOP_K = 2  # a domain scores the mean cosine of its 2 nearest prototypes
LLM_THRESHOLD = 0.5
DOMAIN_TEXT_CHARS = 500


@dataclass(frozen=True)
class Labels:
    """One code per item: int16, `UNKNOWN` below the threshold; confidence float32 in [0, 1]."""

    codes: np.ndarray
    confidence: np.ndarray


class TmdAssigner(Protocol):
    name: str

    def assign_domains(self, titles: Sequence[str], texts: Sequence[str], vectors: np.ndarray,
                       descriptions: Sequence[str | None] | None = None) -> Labels:
        """One domain per article; `vectors` (n_articles, D): e.g. the normalised mean of its concepts;
        `descriptions`: each article's short description ("Art movement"), None or "" where it has none."""

    def assign_concepts(self, texts: Sequence[str], vectors: np.ndarray) -> tuple[Labels, Labels]:
        """(task, modifier) labels, one per concept."""


def _labels(best: np.ndarray, confidence: np.ndarray, threshold: float) -> Labels:
    """Codes with `UNKNOWN` where the confidence is below `threshold` or no code was found (-1)."""
    best, confidence = np.asarray(best), np.asarray(confidence, dtype=np.float32)
    known = (best >= 0) & (confidence >= threshold)
    return Labels(np.where(known, best, UNKNOWN).astype(np.int16), confidence)


def _check_lengths(*sequences: Sequence | None) -> None:
    """ValueError unless the given sequences (None: not given) are all the same length."""
    lengths = [len(s) for s in sequences if s is not None]
    if len(set(lengths)) > 1:
        raise ValueError(f"titles, texts, vectors (and descriptions) must have the same length, got {lengths}")


class ZeroShotTmdAssigner:
    """Nearest label prototypes by cosine, on the caller's stored (L2-normalised) vectors.

    Domains: each domain has several prototype texts (`lvm_pipeline.tmd.domain_prototypes`: its
    templated schema description and short phrases such as "Art movement"); a domain scores the
    mean cosine of its `top_k` nearest prototypes, with each prototype's mean cosine to the
    other prototypes subtracted (`hubness`; `lvm_pipeline.tmd.prototypes`). Two signals are
    scored and averaged: the article vector, and, with `gist`, the embedding of the article's
    gist ("<title>: <short description>", or "<title>: <first sentence>" without one;
    `lvm_pipeline.tmd.gist`), the only text this assigner encodes (one short text per article).
    Tasks and modifiers: the nearest single description, on the concept vectors, nothing encoded.

    Confidence is the softmax of the scores divided by `temperature`, taken at the best label;
    below `threshold` the code is `UNKNOWN`. `domain_prototypes`, `top_k`, `hubness` and `gist`
    exist to measure the parts (benchmarks/tmd_accuracy.py); the defaults are the method of
    docs/TMD.md.
    """

    name = "zero-shot"

    def __init__(self, encoder, threshold: float = ZERO_SHOT_THRESHOLD, temperature: float = ZERO_SHOT_TEMPERATURE,
                 *, domain_prototypes: Sequence[tuple[int, str]] | None = None, top_k: int = DOMAIN_TOP_K,
                 hubness: bool = True, gist: bool = True):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.encoder, self.threshold, self.temperature, self.gist = encoder, threshold, temperature, gist
        if domain_prototypes is None:
            domain_prototypes = default_domain_prototypes()
        self.domains = PrototypeScorer(encoder, domain_prototypes, len(DOMAINS), top_k=top_k, hubness=hubness)
        self.tasks, self.modifiers = (PrototypeScorer(encoder, list(enumerate(label.description for label in axis)),
                                                      len(axis)) for axis in (TASKS, MODIFIERS))

    def assign_domains(self, titles: Sequence[str], texts: Sequence[str], vectors: np.ndarray,
                       descriptions: Sequence[str | None] | None = None) -> Labels:
        _check_lengths(titles, texts, vectors, descriptions)
        scores = self.domains.scores(vectors)
        if self.gist and len(titles):
            descriptions = descriptions if descriptions is not None else [None] * len(titles)
            gists = [article_gist(*parts) for parts in zip(titles, descriptions, texts)]
            scores = (scores + self.domains.scores(self.encoder.encode(gists))) / 2
        return self._best(scores)

    def assign_concepts(self, texts: Sequence[str], vectors: np.ndarray) -> tuple[Labels, Labels]:
        _check_lengths(texts, vectors)
        return self._best(self.tasks.scores(vectors)), self._best(self.modifiers.scores(vectors))

    def _best(self, scores: np.ndarray) -> Labels:
        """The best label of each row, its confidence the softmax of scores / temperature there."""
        logits = scores / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        best = logits.argmax(axis=1)
        return _labels(best, logits[np.arange(len(best)), best] / logits.sum(axis=1), self.threshold)


class LLMTmdAssigner:
    """Labels from an OpenAI-compatible chat-completions endpoint (e.g. Ollama at http://127.0.0.1:11434/v1).

    One request per item and axis, asking for `{"code": <int>, "confidence": <0..1>}` from the
    enumerated labels. An unparseable or out-of-range answer is `UNKNOWN` with confidence 0, as is
    a request still failing after `retries` retries (connection error, timeout, 429 or 5xx, with
    exponential backoff from `backoff_s`); failures are logged, never raised. Answers (raw text)
    are cached in `cache_dir/llm_cache.sqlite` keyed by sha256(model, prompt), so a re-run makes
    no calls; failed requests are not cached. The API key, if any, is the caller's (from the
    environment: `Settings.llm_api_key`), never in code or config files.
    """

    name = "llm"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30,
                 retries: int = 3, cache_dir: str | os.PathLike | None = None, *,
                 threshold: float = LLM_THRESHOLD, backoff_s: float = 1.0):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout_s, self.retries, self.backoff_s = model, timeout_s, retries, backoff_s
        self.threshold = threshold
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.cache = _AnswerCache(Path(cache_dir) / "llm_cache.sqlite") if cache_dir is not None else None

    def assign_domains(self, titles: Sequence[str], texts: Sequence[str], vectors: np.ndarray,
                       descriptions: Sequence[str | None] | None = None) -> Labels:
        _check_lengths(titles, texts, vectors, descriptions)
        descriptions = descriptions if descriptions is not None else [None] * len(titles)
        items = [_domain_item(*parts) for parts in zip(titles, descriptions, texts)]
        return self._label_all("domain of this encyclopedia article", DOMAINS, items)

    def assign_concepts(self, texts: Sequence[str], vectors: np.ndarray) -> tuple[Labels, Labels]:
        _check_lengths(texts, vectors)
        return (self._label_all("task of this sentence (what it does)", TASKS, texts),
                self._label_all("modifier of this sentence (its tone, style or aspect)", MODIFIERS, texts))

    def _label_all(self, question: str, axis: tuple[Label, ...], items: Sequence[str]) -> Labels:
        answers = [parse_answer(self._answer(build_prompt(question, axis, item)), len(axis)) for item in items]
        codes, confidence = zip(*answers) if answers else ((), ())
        return _labels(np.array(codes, dtype=np.int16), np.array(confidence, dtype=np.float32), self.threshold)

    def _answer(self, prompt: str) -> str | None:
        key = hashlib.sha256(json.dumps([self.model, prompt]).encode("utf-8")).hexdigest()
        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            return cached
        answer = self._complete(prompt)
        if answer is not None and self.cache is not None:
            self.cache.put(key, answer)
        return answer

    def _complete(self, prompt: str) -> str | None:
        """The model's reply text, or None after logging a failure."""
        body = {"model": self.model, "temperature": 0,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]}
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.session.post(self.url, json=body, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as error:
                failure = repr(error)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                failure = f"HTTP {response.status_code}"
                continue
            try:
                response.raise_for_status()
                return response.json()["choices"][0]["message"]["content"]
            except (requests.HTTPError, ValueError, LookupError, TypeError) as error:
                log.warning("LLM TMD request to %s failed: %r", self.url, error)
                return None
        log.warning("LLM TMD request to %s failed after %d attempts: %s", self.url, self.retries + 1, failure)
        return None


SYSTEM_PROMPT = ('You label encyclopedia text. Reply with one JSON object and nothing else: '
                 '{"code": <the label number>, "confidence": <your confidence between 0 and 1>}.')


def _domain_item(title: str, description: str | None, text: str) -> str:
    """The article as the domain prompt shows it: title, short description in parentheses if any, text head."""
    head = f"{title}\n({description.strip()})" if description and description.strip() else title
    return f"{head}\n\n{text[:DOMAIN_TEXT_CHARS]}"


def build_prompt(question: str, axis: tuple[Label, ...], text: str) -> str:
    """The user message: the enumerated labels with their descriptions, then the text."""
    options = "\n".join(f"{code}: {label.name} - {label.description}" for code, label in enumerate(axis))
    return f"Choose the {question} from this list:\n{options}\n\nText:\n{text}"


def parse_answer(answer: str | None, n_labels: int) -> tuple[int, float]:
    """(code, confidence) of a strict JSON reply; (UNKNOWN, 0.0) for anything else."""
    try:
        reply = json.loads(_strip_fence(answer))
        code, confidence = reply["code"], float(reply["confidence"])
    except (TypeError, ValueError, LookupError):
        return UNKNOWN, 0.0
    if type(code) is not int or not 0 <= code < n_labels or not 0.0 <= confidence <= 1.0:
        return UNKNOWN, 0.0
    return code, confidence


def _strip_fence(answer: str | None) -> str | None:
    """The reply without a surrounding ``` / ```json markdown fence, which chat models often add."""
    if answer is None:
        return None
    text = answer.strip()
    if text.startswith("```") and text.endswith("```"):
        text = text[3:-3].removeprefix("json")
    return text


class _AnswerCache:
    """sha256 key -> raw reply text, in one sqlite file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, answer: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, answer))


def assigner_from_config(kind: str, encoder=None, **options) -> TmdAssigner:
    """`zero-shot` (needs `encoder`; options: threshold, temperature) or `llm` (options: LLMTmdAssigner's)."""
    if kind == "zero-shot":
        return ZeroShotTmdAssigner(encoder, **options)
    if kind == "llm":
        return LLMTmdAssigner(**options)
    raise ValueError(f"unknown TMD assigner {kind!r}; expected 'zero-shot' or 'llm'")
