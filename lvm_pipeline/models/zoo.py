"""Every model family, imported so that it registers itself (see `lvm_pipeline.models.base`)."""

from lvm_pipeline.models import hybrid, mamba2, memory_gru, recurrent, transformer  # noqa: F401
