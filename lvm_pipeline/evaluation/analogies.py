"""Semantic vector arithmetic (the predecessor's Phase 2.4): does b - a + c land on d in the encoder's space?

Two tests of the same offset query unit(unit(b) - unit(a) + unit(c)), each ranked with its three inputs excluded
(else c, or b, is usually nearest):
- word analogies: Mikolov's questions-words set (14 sections of "a b c d" lines, as gensim ships it), every word
  embedded once with the bank's encoder; d ranked among the set's vocabulary by cosine. Top-1 / top-3 accuracy
  overall, semantic (the sections not named gram*: the first five), syntactic (gram*) and per section, with
  bootstrap CIs over questions, beside the chance levels k / (V - 3).
- within articles: v[i+1] - v[i] + v[i+2] against v[i+3] for consecutive concepts of the test articles, ranked in
  the full bank; Hit@1/5/10 with cluster-bootstrap CIs by article, beside copy_last (v[i+2] alone) and any model on
  the same targets with the same three rows excluded, each paired with the arithmetic.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lvm_pipeline.arrays import row_slices, unit_rows
from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.baselines import CopyLast
from lvm_pipeline.evaluation.bootstrap import ClusterBootstrap, Estimate
from lvm_pipeline.evaluation.context_text import TextEncoder
from lvm_pipeline.evaluation.queries import Predictor, Queries
from lvm_pipeline.evaluation.report import format_difference
from lvm_pipeline.evaluation.retrieval import BankIndex, chance_at_k, retrieval_ranks
from lvm_pipeline.markdown import md_table
from lvm_pipeline.tmd.schema import bank_tmd_vectors

QUESTIONS_WORDS = "test/test_data/questions-words.txt"  # inside the gensim package
ANALOGY_KS = (1, 3)
ARTICLE_KS = (1, 5, 10)
INPUTS = 3  # a, b, c
SYNTACTIC_PREFIX = "gram"
CHUNK_QUESTIONS = 4096  # questions ranked per matrix product


def offset_queries(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, D) float32 unit(unit(b) - unit(a) + unit(c)) for rows a, b, c: "a is to b as c is to ?"."""
    unit = [unit_rows(rows, dtype=np.float32) for rows in (a, b, c)]
    return unit_rows(unit[1] - unit[0] + unit[2], dtype=np.float32)


# ---------------------------------------------------------------- word analogies


@dataclass(frozen=True)
class AnalogySet:
    """Questions a:b :: c:d as indices into one vocabulary (lower-case words, sorted), grouped in sections."""

    source: str
    sections: tuple[str, ...]  # in file order
    vocabulary: tuple[str, ...]
    questions: np.ndarray  # int64 (n, 4): vocabulary indices of a, b, c, d
    section: np.ndarray  # int64 (n,): index into sections

    def __len__(self) -> int:
        return len(self.questions)

    def groups(self) -> dict[str, np.ndarray]:
        """Group name -> its question indices: all, semantic, syntactic, then every section in file order."""
        syntactic = np.array([name.startswith(SYNTACTIC_PREFIX) for name in self.sections])
        return {"all": np.arange(len(self)), "semantic": np.flatnonzero(~syntactic[self.section]),
                "syntactic": np.flatnonzero(syntactic[self.section]),
                **{name: np.flatnonzero(self.section == i) for i, name in enumerate(self.sections)}}

    def capped(self, max_per_section: int | None, seed: int = 0) -> AnalogySet:
        """At most `max_per_section` questions of each section (a seeded sample, in file order); None: all. The
        vocabulary stays the whole set's, so the chance level does not change."""
        if max_per_section is None:
            return self
        rng = np.random.default_rng(seed)
        keep = [members if len(members) <= max_per_section else rng.choice(members, max_per_section, replace=False)
                for members in (np.flatnonzero(self.section == i) for i in range(len(self.sections)))]
        kept = np.sort(np.concatenate(keep))
        return AnalogySet(self.source, self.sections, self.vocabulary, self.questions[kept], self.section[kept])


def parse_analogies(lines: Iterable[str], source: str = "") -> AnalogySet:
    """Lines ": section-name" open a section, the lines after it hold four words "a b c d"; blank lines are
    skipped. ValueError, with the line number, for a question outside a section or of another length."""
    sections: list[str] = []
    words: list[list[str]] = []
    section: list[int] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            sections.append(line[1:].strip())
            continue
        question = line.lower().split()
        if not sections or len(question) != 4:
            raise ValueError(f"{source or 'analogies'} line {number}: expected four words after a ': section' line, "
                             f"got {line!r}")
        words.append(question)
        section.append(len(sections) - 1)
    vocabulary = tuple(sorted({word for question in words for word in question}))
    index = {word: i for i, word in enumerate(vocabulary)}
    questions = np.array([[index[word] for word in question] for question in words], dtype=np.int64).reshape(-1, 4)
    return AnalogySet(source, tuple(sections), vocabulary, questions, np.array(section, dtype=np.int64))


def questions_words() -> AnalogySet:
    """Mikolov's analogy set as gensim ships it (19,544 questions in 14 sections), read without a download."""
    path = importlib.resources.files("gensim") / QUESTIONS_WORDS
    return parse_analogies(path.read_text(encoding="utf-8").splitlines(), source="questions-words.txt (gensim)")


def analogy_ranks(embeddings: np.ndarray, questions: np.ndarray, chunk: int = CHUNK_QUESTIONS) -> np.ndarray:
    """(n,) 1-based rank of d among the vocabulary by cosine to the offset query of (a, b, c), a, b and c
    excluded; ties count against d (rank = words at least as similar as d). `embeddings` (V, D): unit rows."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    ranks = np.empty(len(questions), dtype=np.int64)
    for rows in row_slices(len(questions), chunk):
        a, b, c, d = np.asarray(questions[rows]).T
        scores = offset_queries(embeddings[a], embeddings[b], embeddings[c]) @ embeddings.T
        members = np.arange(len(scores))
        for excluded in (a, b, c):
            scores[members, excluded] = -np.inf
        ranks[rows] = (scores >= scores[members, d][:, None]).sum(axis=1)
    return ranks


@dataclass(frozen=True)
class GroupAccuracy:
    name: str
    n_questions: int
    estimates: dict[str, Estimate]  # hit_at_1, hit_at_3: top-1 / top-3 accuracy with bootstrap CIs over questions


@dataclass
class AnalogyResult:
    analogies: AnalogySet  # the questions evaluated (capped or whole)
    encoder_fingerprint: str
    ranks: np.ndarray  # (n,) see analogy_ranks
    groups: list[GroupAccuracy]  # all, semantic, syntactic, each section
    seconds: dict[str, float]  # embed, rank (incl. the bootstrap)

    @property
    def vocabulary_size(self) -> int:
        return len(self.analogies.vocabulary)

    @property
    def chance(self) -> dict[int, float]:
        """Top-k accuracy of a random word other than the three inputs: k / (V - 3)."""
        return {k: k / (self.vocabulary_size - INPUTS) for k in ANALOGY_KS}


def word_analogies(encoder: TextEncoder, analogies: AnalogySet | None = None, max_per_section: int | None = None,
                   n_resamples: int = 1000, seed: int = 0) -> AnalogyResult:
    """Every distinct word embedded once with `encoder`, every question ranked (see `analogy_ranks`); top-1 and
    top-3 accuracy per group with 95% bootstrap CIs (each question resampled on its own). Default: the whole
    questions-words set."""
    analogies = (analogies or questions_words()).capped(max_per_section, seed)
    began = time.perf_counter()
    embeddings = unit_rows(encoder.encode(list(analogies.vocabulary)), dtype=np.float32)
    embedded = time.perf_counter()
    ranks = analogy_ranks(embeddings, analogies.questions)
    groups = []
    for name, members in analogies.groups().items():
        if len(members):
            bootstrap = ClusterBootstrap(np.arange(len(members)), n_resamples, seed)
            groups.append(GroupAccuracy(name, len(members), {
                f"hit_at_{k}": bootstrap.estimate(ranks[members] <= k) for k in ANALOGY_KS}))
    seconds = {"embed": embedded - began, "rank": time.perf_counter() - embedded}
    return AnalogyResult(analogies, encoder.fingerprint, ranks, groups, seconds)


# ---------------------------------------------------------------- within articles


class Arithmetic:
    """Predicts v[t-2] - v[t-3] + v[t-1] (unit rows) for target t: the article's last step added once more."""

    name = "arithmetic"

    def predict(self, vectors: np.ndarray, queries: Queries, tmd: np.ndarray | None = None) -> np.ndarray:
        if np.any(queries.context_length < INPUTS):
            raise ValueError(f"the arithmetic needs {INPUTS} context concepts per query")
        t = queries.target
        return offset_queries(vectors[t - 3], vectors[t - 2], vectors[t - 1])


def arithmetic_queries(sequences: TrainingSequences, split: str = "test") -> Queries:
    """The split's windows (contexts of at most C concepts, targets whose text is a train text already dropped)
    whose target has at least three concepts of its article before it: target t = i + 3."""
    windows = sequences.windows[split]
    position = windows.target - sequences.bank.article_bounds[windows.article, 0]
    return windows.subset(np.flatnonzero(position >= INPUTS))


@dataclass(frozen=True)
class ArithmeticLine:
    name: str
    per_query: dict[str, np.ndarray]  # hit_at_k: 0/1 per query, the three input rows excluded from the bank
    estimates: dict[str, Estimate]
    minus_arithmetic: dict[str, Estimate] = field(default_factory=dict)  # paired; empty for the arithmetic itself


@dataclass
class WithinArticleResult:
    split: str
    bank_size: int
    queries: Queries
    n_articles: int
    lines: dict[str, ArithmeticLine]  # arithmetic, copy_last, then each predictor given

    @property
    def chance(self) -> dict[int, float]:
        return {k: chance_at_k(self.bank_size, k) for k in ARTICLE_KS}


def within_articles(sequences: TrainingSequences, predictors: Sequence[Predictor] = (), split: str = "test",
                    n_resamples: int = 1000, seed: int = 0, index: BankIndex | None = None,
                    tmd: np.ndarray | None = None) -> WithinArticleResult:
    """The arithmetic, copy_last and each of `predictors` on the same targets (`arithmetic_queries`), each
    prediction ranked in the full bank with the target's three preceding rows excluded; the predictors see the
    window's whole context. Hit@1/5/10 with cluster-bootstrap CIs by article, and each minus the arithmetic."""
    bank = sequences.bank
    queries = arithmetic_queries(sequences, split)
    if not len(queries):
        raise PipelineError(f"no {split} article has {INPUTS + 1} concepts: nothing to measure the arithmetic on")
    index = index or BankIndex(bank.vectors)
    if tmd is None and any(getattr(p, "uses_tmd", False) for p in predictors):
        tmd = bank_tmd_vectors(bank.column("tmd_bits"))
    inputs = Queries(queries.target, queries.target - INPUTS, queries.article)  # "context" = the excluded rows
    bootstrap = ClusterBootstrap(queries.article, n_resamples, seed)
    lines: dict[str, ArithmeticLine] = {}
    for predictor in (Arithmetic(), CopyLast(), *predictors):
        ranked = retrieval_ranks(index, predictor.predict(bank.vectors, queries, tmd), inputs, ARTICLE_KS)
        hits = {f"hit_at_{k}": ranked[f"hit_at_{k}_no_context"] for k in ARTICLE_KS}
        reference = lines.get(Arithmetic.name)
        lines[predictor.name] = ArithmeticLine(
            predictor.name, hits, {m: bootstrap.estimate(v) for m, v in hits.items()},
            {m: bootstrap.difference(v, reference.per_query[m]) for m, v in hits.items()} if reference else {})
    return WithinArticleResult(split, len(bank), queries, len(np.unique(queries.article)), lines)


# ---------------------------------------------------------------- report


@dataclass
class VectorArithmetic:
    analogies: AnalogyResult | None  # None without the bank's encoder
    within_articles: WithinArticleResult


def result_json(result: VectorArithmetic, about: dict | None = None) -> dict:
    out: dict = {**(about or {})}
    if result.analogies is not None:
        a = result.analogies
        out["analogies"] = {
            "set": a.analogies.source, "vocabulary_size": a.vocabulary_size, "n_questions": len(a.analogies),
            "encoder_fingerprint": a.encoder_fingerprint, **{f"chance_hit_at_{k}": c for k, c in a.chance.items()},
            "groups": {g.name: {"n_questions": g.n_questions, **{m: e.to_json() for m, e in g.estimates.items()}}
                       for g in a.groups},
            "seconds": a.seconds}
    w = result.within_articles
    out["within_articles"] = {
        "split": w.split, "bank_size": w.bank_size, "n_queries": len(w.queries), "n_articles": w.n_articles,
        **{f"chance_hit_at_{k}": c for k, c in w.chance.items()},
        "predictors": {name: {m: e.to_json() for m, e in line.estimates.items()} for name, line in w.lines.items()},
        "minus_arithmetic": {name: {m: e.to_json() for m, e in line.minus_arithmetic.items()}
                             for name, line in w.lines.items() if line.minus_arithmetic}}
    return out


def render_markdown(result: VectorArithmetic, about: dict | None = None) -> str:
    """The report: both tests with their sets, sizes, chance levels and 95% CIs."""
    lines = ["# Vector arithmetic: does b - a + c land on d?", "",
             "The query is unit(unit(b) - unit(a) + unit(c)), ranked by cosine with a, b and c excluded (otherwise the "
             "nearest is often c or b itself).", "",
             *[f"- {key}: {value}" for key, value in (about or {}).items()], "", "## Word analogies", ""]
    a = result.analogies
    if a is None:
        lines += ["Left out: the configured encoder is not the bank's (the words must be embedded by the encoder "
                  "that embedded the bank).", ""]
    else:
        chance = ", ".join(f"top-{k} {100 * c:.2f}%" for k, c in a.chance.items())
        lines += [f"Set: {a.analogies.source}, **{len(a.analogies):,}** questions in {len(a.analogies.sections)} "
                  f"sections; vocabulary V = **{a.vocabulary_size:,}** words (the set's own), each embedded once "
                  f"by the bank's encoder ({a.encoder_fingerprint}); d ranked among the V - 3 others. Chance: "
                  f"{chance}. 95% bootstrap CIs over questions. Semantic: the sections not named gram*; syntactic: "
                  "the gram* ones.", "",
                  md_table(["group", "questions", "top-1", "top-3"], [
                      (g.name, f"{g.n_questions:,}", *(_percent(g.estimates[f"hit_at_{k}"]) for k in ANALOGY_KS))
                      for g in a.groups]),
                  "", f"Embedding took {a.seconds['embed']:.1f} s, ranking and CIs {a.seconds['rank']:.1f} s.", ""]
    w = result.within_articles
    hits = [f"hit_at_{k}" for k in ARTICLE_KS]
    lines += ["## Within articles", "",
              f"For **{len(w.queries):,}** {w.split} targets v[i+3] of **{w.n_articles:,}** articles (every {w.split} "
              "window whose target has three concepts of its article before it), the arithmetic predicts "
              "v[i+1] - v[i] + v[i+2]; copy_last predicts v[i+2]; each model predicts from the window's whole context. "
              f"Every prediction is ranked in the full bank of **{w.bank_size:,}** concepts with rows i, i+1, i+2 "
              "excluded. Chance: " + ", ".join(f"Hit@{k} {100 * c:.3g}%" for k, c in w.chance.items())
              + ". 95% cluster-bootstrap CIs by article; the differences are paired (same resampled articles).", "",
              md_table(["predictor", *hits, *(f"{m} - arithmetic" for m in hits)], [
                  (name, *(_percent(line.estimates[m]) for m in hits),
                   *(format_difference(line.minus_arithmetic.get(m)) for m in hits))
                  for name, line in w.lines.items()]),
              ""]
    return "\n".join(lines)


def _percent(e: Estimate) -> str:
    """A share with its CI, in percent (report.format_estimate's form for its own Hit@K metrics)."""
    return f"{100 * e.value:.1f}% [{100 * e.ci_low:.1f}, {100 * e.ci_high:.1f}]"
