"""STOP/GO gates against PostgreSQL: load a batch, run a gate, persist its result, say which batches pass.

The gates themselves are pure functions in `lvm_pipeline.gates`; this module feeds them one
batch's rows (ordered by article and position) and records every result in `gate_result`, so
that decisions survive across runs and downstream stages can ask "which batches passed?".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Callable

import numpy as np
from psycopg2 import sql

from lvm_pipeline.config import settings
from lvm_pipeline.datasets.ordered import BatchConcepts, load_batch
from lvm_pipeline.decoders import Vec2TextInverter, check_invertible
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.gates import (ChunkBoundaryThresholds, CoherenceThresholds, DataIntegrityThresholds,
                                DecoderBaselineThresholds, DirectionalityThresholds, GateResult, Inversion,
                                TmdDistributionThresholds, check_chunk_boundaries, check_coherence,
                                check_data_integrity, check_decoder_baseline, check_directionality,
                                check_tmd_distribution)
from lvm_pipeline.tmd.schema import DOMAINS

DECODER_SAMPLE = 200  # concepts re-encoded for the decoder round trip
VEC2TEXT_SAMPLE = 32  # of those, inverted with vec2text (slow: 20 correction steps each)


def _decoder(batch: BatchConcepts, encoder: SentenceEncoder | None, t: DecoderBaselineThresholds) -> GateResult:
    if encoder is None:
        raise ValueError("decoder_baseline needs the encoder")
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(batch.texts), size=min(DECODER_SAMPLE, len(batch.texts)), replace=False))
    started = time.perf_counter()
    queries = encoder.encode([batch.texts[i] for i in sample])
    latency = time.perf_counter() - started  # for all queries: the gate divides
    # the bank is the whole batch; the sampled texts are looked up in it
    return check_decoder_baseline(batch.texts, batch.vectors, queries, latency, query_index=sample,
                                  inversion=_vec2text_round_trip(batch, sample[:VEC2TEXT_SAMPLE], encoder), thresholds=t)


def _vec2text_round_trip(batch: BatchConcepts, sample: np.ndarray, encoder: SentenceEncoder) -> Inversion | None:
    """vec2text's texts for some stored vectors, re-encoded, when local vec2text weights are configured."""
    dirs = settings().vec2text_dirs
    if dirs is None:
        return None
    stored = batch.vectors[sample]
    check_invertible(stored)  # before loading weights: a 384-D bank cannot be inverted
    started = time.perf_counter()
    inverted = _vec2text(*dirs).invert(stored)
    latency = time.perf_counter() - started
    return Inversion(index=sample, inverted=inverted, vectors=encoder.encode(inverted), latency_s=latency)


@lru_cache(maxsize=1)
def _vec2text(inversion_dir: str, corrector_dir: str) -> Vec2TextInverter:
    return Vec2TextInverter(inversion_dir, corrector_dir)


@dataclass(frozen=True)
class Gate:
    name: str
    asset: str  # the asset the check is attached to
    blocking: bool  # a STOP keeps the batch out of training data
    thresholds: type  # the gate's thresholds dataclass; its defaults are DESIGN.md section 6's
    run: Callable[[BatchConcepts, SentenceEncoder | None, Any], GateResult]  # (batch, encoder, thresholds)
    needs_encoder: bool = False


GATES: tuple[Gate, ...] = (
    Gate("data_integrity", "concept_vectors", True, DataIntegrityThresholds, lambda b, _, t: check_data_integrity(
        b.cpe_ids, b.texts, b.vectors, n_concepts=len(b.texts), n_vectors=b.n_vectors,
        expected_dim=b.dimension, encoder_fingerprints=b.fingerprints, thresholds=t)),
    Gate("coherence", "concept_vectors", True, CoherenceThresholds,
         lambda b, _, t: check_coherence(b.article_ids, b.titles, b.texts, b.vectors, thresholds=t)),
    Gate("chunk_boundaries", "concept_chunks", True, ChunkBoundaryThresholds,
         lambda b, _, t: check_chunk_boundaries(b.texts, b.titles, thresholds=t)),
    Gate("tmd_distribution", "tmd_codes", True, TmdDistributionThresholds, lambda b, _, t: check_tmd_distribution(
        np.where(b.domain_codes < -1, -1, b.domain_codes), [d.name for d in DOMAINS], thresholds=t)),
    Gate("directionality", "concept_vectors", False, DirectionalityThresholds,
         lambda b, _, t: check_directionality(b.article_ids, b.vectors, thresholds=t)),
    Gate("decoder_baseline", "concept_vectors", False, DecoderBaselineThresholds, _decoder, needs_encoder=True),
)
GATES_BY_NAME = {g.name: g for g in GATES}


def evaluate_gate(conn, batch_id: str, gate_name: str, encoder: SentenceEncoder | None = None,
                  run_id: str | None = None, thresholds: Any = None) -> GateResult:
    """Run one gate on one batch (default thresholds unless given) and record the result."""
    gate = GATES_BY_NAME[gate_name]
    batch = load_batch(conn, batch_id)
    result = gate.run(batch, encoder, thresholds or gate.thresholds())
    with conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO gate_result (batch_id, content_hash, gate, decision, blocking, summary, figures,
                                        thresholds, worst, run_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (batch_id, batch.content_hash, gate.name, result.decision, gate.blocking, result.summary,
             json.dumps(result.figures), json.dumps(result.thresholds), json.dumps(result.worst), run_id),
        )
    return result


@dataclass(frozen=True)
class GateStatus:
    batch_id: str
    gate: str
    decision: str
    blocking: bool
    summary: str
    figures: dict
    evaluated_at: str
    current: bool  # judged the batch's current content


_STATUS_COLUMNS = sql.SQL("""g.batch_id, g.gate, g.decision, g.blocking, g.summary, g.figures, g.evaluated_at::text,
                      g.content_hash = b.content_hash""")


def gate_results_since(conn, after_id: int) -> list[tuple[int, GateStatus]]:
    """Results recorded after `after_id` (a gate_result_id), oldest first: what a watcher has not seen."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT g.gate_result_id, {} FROM gate_result g JOIN batch b USING (batch_id) "
                            "WHERE g.gate_result_id > %s ORDER BY g.gate_result_id").format(_STATUS_COLUMNS), (after_id,))
        return [(row[0], GateStatus(*row[1:])) for row in cur.fetchall()]


def gate_status(conn, batch_id: str | None = None) -> list[GateStatus]:
    """The latest result of every gate for every batch (or one batch)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("""SELECT DISTINCT ON (g.batch_id, g.gate) {}
               FROM gate_result g JOIN batch b USING (batch_id)
               WHERE %(batch)s::text IS NULL OR g.batch_id = %(batch)s
               ORDER BY g.batch_id, g.gate, g.evaluated_at DESC, g.gate_result_id DESC""").format(_STATUS_COLUMNS),
            {"batch": batch_id},
        )
        return [GateStatus(*row) for row in cur.fetchall()]


@dataclass(frozen=True)
class Eligibility:
    batch_id: str
    content_hash: str
    included: bool
    reason: str


def blocking_outcome(statuses: list[GateStatus]) -> tuple[list[GateStatus], list[str]]:
    """Of one batch's latest results: the blocking gates that STOPped, and those not evaluated on its current file."""
    current = {s.gate: s for s in statuses if s.current}
    stopped = [current[g.name] for g in GATES if g.blocking and g.name in current and current[g.name].decision == "STOP"]
    missing = [g.name for g in GATES if g.blocking and g.name not in current]
    return stopped, missing


def batch_eligibility(conn) -> list[Eligibility]:
    """For every batch: may it enter training data, and why (not)."""
    with conn.cursor() as cur:
        cur.execute("SELECT batch_id, content_hash, status, excluded_reason FROM batch ORDER BY batch_id")
        batches = cur.fetchall()
    latest: dict[str, list[GateStatus]] = {}
    for status in gate_status(conn):
        latest.setdefault(status.batch_id, []).append(status)
    verdicts = []
    for batch_id, content_hash, stage, excluded_reason in batches:
        verdict = partial(Eligibility, batch_id, content_hash)
        stopped, missing = blocking_outcome(latest.get(batch_id, []))
        if excluded_reason:
            verdicts.append(verdict(False, f"excluded on purpose: {excluded_reason}"))
        elif stage != "embedded":
            verdicts.append(verdict(False, f"not fully ingested (stage: {stage})"))
        elif stopped:
            verdicts.append(verdict(False, "STOP: " + "; ".join(f"{s.gate}: {s.summary}" for s in stopped)))
        elif missing:
            verdicts.append(verdict(False, "not checked for its current content: " + ", ".join(missing)))
        else:
            verdicts.append(verdict(True, "all blocking gates passed"))
    return verdicts


def set_excluded(conn, batch_id: str, reason: str | None) -> None:
    """Exclude a batch from training data on purpose (reason), or include it again (None)."""
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE batch SET excluded_reason = %s WHERE batch_id = %s", (reason, batch_id))
        if cur.rowcount == 0:
            raise LookupError(f"no batch {batch_id!r} in the database")
