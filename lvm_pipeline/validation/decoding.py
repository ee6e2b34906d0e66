"""The decoder_baseline gate's inputs: a sample of a batch's texts encoded afresh, and vec2text when configured."""

from __future__ import annotations

import time

import numpy as np

from lvm_pipeline.db.concepts import BatchConcepts
from lvm_pipeline.decoders import configured_inverter
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.gates import DecoderBaselineThresholds, GateResult, Inversion, check_decoder_baseline

DECODER_SAMPLE = 200  # concepts re-encoded for the decoder round trip
VEC2TEXT_SAMPLE = 32  # of those, inverted with vec2text (slow: 20 correction steps each)


def decoder_round_trip(batch: BatchConcepts, encoder: SentenceEncoder | None,
                       thresholds: DecoderBaselineThresholds) -> GateResult:
    """Leave-one-out retrieval decoding of a seeded sample of the batch (the bank is the whole batch)."""
    if encoder is None:
        raise ValueError("decoder_baseline needs the encoder")
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(batch.texts), size=min(DECODER_SAMPLE, len(batch.texts)), replace=False))
    started = time.perf_counter()
    queries = encoder.encode([batch.texts[i] for i in sample])
    latency = time.perf_counter() - started  # for all queries: the gate divides
    return check_decoder_baseline(batch.texts, batch.vectors, queries, latency, encoder.encode, query_index=sample,
                                  inversion=_vec2text_round_trip(batch, sample[:VEC2TEXT_SAMPLE], encoder),
                                  thresholds=thresholds)


def _vec2text_round_trip(batch: BatchConcepts, sample: np.ndarray, encoder: SentenceEncoder) -> Inversion | None:
    """vec2text's texts for some stored vectors, re-encoded, when local vec2text weights are configured."""
    stored = batch.vectors[sample]
    inverter = configured_inverter(stored)
    if inverter is None:
        return None
    started = time.perf_counter()
    inverted = inverter.invert(stored)
    latency = time.perf_counter() - started
    return Inversion(index=sample, inverted=inverted, vectors=encoder.encode(inverted), latency_s=latency)

