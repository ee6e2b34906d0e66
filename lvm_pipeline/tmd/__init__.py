"""TMD (domain / task / modifier) codes: the schema and the assigners that label articles and concepts."""

from lvm_pipeline.tmd.assigners import (
    Labels,
    LLMTmdAssigner,
    TmdAssigner,
    ZeroShotTmdAssigner,
    assigner_from_config,
)
from lvm_pipeline.tmd.schema import (
    DOMAINS,
    MODIFIERS,
    TASKS,
    UNKNOWN,
    Label,
    lane_index,
    pack_tmd,
    tmd_vector,
    tmd_vectors,
    unpack_tmd,
)

__all__ = [
    "DOMAINS", "MODIFIERS", "TASKS", "UNKNOWN", "Label", "Labels", "LLMTmdAssigner", "TmdAssigner",
    "ZeroShotTmdAssigner", "assigner_from_config", "lane_index", "pack_tmd", "tmd_vector", "tmd_vectors",
    "unpack_tmd",
]
