"""The gate registry: each gate's name, the asset it checks, its kind, thresholds, and how it reads a batch.

Kinds: `blocking` (a STOP keeps the batch out of training data and blocks downstream assets),
`warn` (graded, never blocks), `info` (figures only, never graded, never alerts). Most gates read
the batch's concepts (`load_batch`); `quarantine` and `duplicates` read what they need themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lvm_pipeline.db import articles, duplicates
from lvm_pipeline.db.batches import record_counts
from lvm_pipeline.db.concepts import count_concepts, load_batch
from lvm_pipeline.db.gates import gate_status
from lvm_pipeline.gates import (
    ChunkBoundaryThresholds,
    CoherenceThresholds,
    DataIntegrityThresholds,
    DecoderBaselineThresholds,
    DirectionalityThresholds,
    GateResult,
    TextQualityThresholds,
    TmdDistributionThresholds,
    check_chunk_boundaries,
    check_coherence,
    check_data_integrity,
    check_directionality,
    check_text_quality,
    check_tmd_distribution,
)
from lvm_pipeline.gates.duplicates import ConceptCopy, DuplicatesThresholds, check_duplicates
from lvm_pipeline.gates.quarantine import QuarantineReason, QuarantineThresholds, check_quarantine
from lvm_pipeline.near_duplicates import find_near_duplicates
from lvm_pipeline.tmd.schema import DOMAINS
from lvm_pipeline.validation.decoding import decoder_round_trip

GateKind = Literal["blocking", "warn", "info"]


@dataclass(frozen=True)
class Gate:
    name: str
    asset: str  # the asset the check is attached to
    kind: GateKind
    thresholds: type  # the gate's thresholds dataclass; its defaults are DESIGN.md section 6's (or measured: docs/GATES.md)
    run: Callable[[Any, Any, Any], GateResult]  # (what `load` read, encoder or None, thresholds)
    needs_encoder: bool = False
    load: Callable[[Any, str], Any] = load_batch  # (connection, batch id) -> the gate's input

    @property
    def blocking(self) -> bool:
        return self.kind == "blocking"


def load_quarantine(conn, batch_id: str) -> tuple[int, list[QuarantineReason]]:
    """(records read, the quarantine's reasons) of the batch's file as parsed last."""
    with conn.cursor() as cur:
        n_records, _ = record_counts(cur, batch_id)
        return n_records, [QuarantineReason(*row) for row in articles.quarantine_reasons(cur, batch_id)]


def load_duplicates(conn, batch_id: str) -> dict[str, Any]:
    """`check_duplicates`' inputs: the batch's exact concept copies and its near-duplicate articles, against the
    earlier batches that no blocking gate STOPped."""
    stopped = sorted({s.batch_id for s in gate_status(conn) if s.current and s.blocking and s.decision == "STOP"})
    with conn.cursor() as cur:
        copies = [ConceptCopy(*row) for row in duplicates.concept_copies(cur, batch_id, stopped)]
        earlier, mine, titles = duplicates.article_signatures(cur, batch_id, stopped)
        n_concepts, n_articles = count_concepts(cur, batch_id), articles.count_articles(cur, batch_id)
    return {"n_concepts": n_concepts, "n_articles": n_articles, "copies": copies,
            "near_copies": find_near_duplicates(earlier, mine), "titles": titles}


GATES: tuple[Gate, ...] = (
    Gate("quarantine", "raw_articles", "blocking", QuarantineThresholds,
         lambda q, _, t: check_quarantine(*q, thresholds=t), load=load_quarantine),
    Gate("text_quality", "concept_chunks", "blocking", TextQualityThresholds,
         lambda b, _, t: check_text_quality(b.texts, b.titles, thresholds=t)),
    Gate("chunk_boundaries", "concept_chunks", "blocking", ChunkBoundaryThresholds,
         lambda b, _, t: check_chunk_boundaries(b.texts, b.segmentation_mode, b.titles, thresholds=t)),
    Gate("duplicates", "concept_chunks", "blocking", DuplicatesThresholds,
         lambda d, _, t: check_duplicates(**d, thresholds=t), load=load_duplicates),
    Gate("data_integrity", "concept_vectors", "blocking", DataIntegrityThresholds, lambda b, _, t: check_data_integrity(
        b.cpe_ids, b.texts, b.vectors, n_concepts=len(b.texts), n_vectors=b.n_vectors,
        expected_dim=b.dimension, encoder_fingerprints=b.fingerprints, n_quarantined=b.n_quarantined, thresholds=t)),
    Gate("coherence", "concept_vectors", "blocking", CoherenceThresholds,
         lambda b, _, t: check_coherence(b.article_ids, b.titles, b.texts, b.vectors, thresholds=t)),
    Gate("directionality", "concept_vectors", "info", DirectionalityThresholds,
         lambda b, _, t: check_directionality(b.article_ids, b.vectors, thresholds=t)),
    Gate("decoder_baseline", "concept_vectors", "warn", DecoderBaselineThresholds, decoder_round_trip,
         needs_encoder=True),
    Gate("tmd_distribution", "tmd_codes", "blocking", TmdDistributionThresholds,
         lambda b, _, t: check_tmd_distribution(b.domain_codes, [d.name for d in DOMAINS], len(set(b.article_ids)),
                                                thresholds=t)),
)
GATES_BY_NAME = {g.name: g for g in GATES}
