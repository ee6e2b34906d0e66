"""The gate registry: each gate's name, the asset it checks, its kind, thresholds, and how it reads a batch.

Kinds: `blocking` (a STOP keeps the batch out of training data and blocks downstream assets),
`warn` (graded, never blocks), `info` (figures only, never graded, never alerts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lvm_pipeline.db.concepts import BatchConcepts
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
from lvm_pipeline.tmd.schema import DOMAINS
from lvm_pipeline.validation.decoding import decoder_round_trip

GateKind = Literal["blocking", "warn", "info"]


@dataclass(frozen=True)
class Gate:
    name: str
    asset: str  # the asset the check is attached to
    kind: GateKind
    thresholds: type  # the gate's thresholds dataclass; its defaults are DESIGN.md section 6's (or measured: docs/GATES.md)
    run: Callable[[BatchConcepts, Any, Any], GateResult]  # (batch, encoder or None, thresholds)
    needs_encoder: bool = False

    @property
    def blocking(self) -> bool:
        return self.kind == "blocking"


GATES: tuple[Gate, ...] = (
    Gate("text_quality", "concept_chunks", "blocking", TextQualityThresholds,
         lambda b, _, t: check_text_quality(b.texts, b.titles, thresholds=t)),
    Gate("chunk_boundaries", "concept_chunks", "blocking", ChunkBoundaryThresholds,
         lambda b, _, t: check_chunk_boundaries(b.texts, b.segmentation_mode, b.titles, thresholds=t)),
    Gate("data_integrity", "concept_vectors", "blocking", DataIntegrityThresholds, lambda b, _, t: check_data_integrity(
        b.cpe_ids, b.texts, b.vectors, n_concepts=len(b.texts), n_vectors=b.n_vectors,
        expected_dim=b.dimension, encoder_fingerprints=b.fingerprints, thresholds=t)),
    Gate("coherence", "concept_vectors", "blocking", CoherenceThresholds,
         lambda b, _, t: check_coherence(b.article_ids, b.titles, b.texts, b.vectors, thresholds=t)),
    Gate("directionality", "concept_vectors", "info", DirectionalityThresholds,
         lambda b, _, t: check_directionality(b.article_ids, b.vectors, thresholds=t)),
    Gate("decoder_baseline", "concept_vectors", "warn", DecoderBaselineThresholds, decoder_round_trip,
         needs_encoder=True),
    Gate("tmd_distribution", "tmd_codes", "blocking", TmdDistributionThresholds,
         lambda b, _, t: check_tmd_distribution(b.domain_codes, [d.name for d in DOMAINS], thresholds=t)),
)
GATES_BY_NAME = {g.name: g for g in GATES}
