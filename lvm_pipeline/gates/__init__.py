"""STOP/GO gates: pure functions from one batch's arrays to a `GateResult` (figures, decision, worst examples).

No Dagster and no database here: `lvm_pipeline.validation` runs them on batches read from
PostgreSQL and records the results; `lvm_pipeline.defs` wraps each as an asset check.
"""

from lvm_pipeline.gates.chunk_boundaries import ChunkBoundaryThresholds, check_chunk_boundaries
from lvm_pipeline.gates.coherence import CoherenceThresholds, check_coherence
from lvm_pipeline.gates.data_integrity import DataIntegrityThresholds, check_data_integrity
from lvm_pipeline.gates.decoder_baseline import DecoderBaselineThresholds, Inversion, check_decoder_baseline
from lvm_pipeline.gates.directionality import DirectionalityThresholds, check_directionality
from lvm_pipeline.gates.result import Decision, GateResult
from lvm_pipeline.gates.text_quality import TextQualityThresholds, check_text_quality
from lvm_pipeline.gates.tmd_distribution import TmdDistributionThresholds, check_tmd_distribution

__all__ = [
    "ChunkBoundaryThresholds", "CoherenceThresholds", "DataIntegrityThresholds", "Decision",
    "DecoderBaselineThresholds", "DirectionalityThresholds", "GateResult", "Inversion", "TextQualityThresholds",
    "TmdDistributionThresholds", "check_chunk_boundaries", "check_coherence", "check_data_integrity",
    "check_decoder_baseline", "check_directionality", "check_text_quality", "check_tmd_distribution",
]
