"""Every model family, imported so that it registers itself (see `lvm_pipeline.models.base`)."""

from lvm_pipeline.models import (  # noqa: F401
    base_lcm,
    diffusion_lcm,
    hybrid,
    mamba2,
    memory_gru,
    recurrent,
    retnet,
    rwkv,
    tmd_moe,
    transformer,
)
