"""Next-concept models: one interface (`base`), a family per module, named configs, a builder.

`FAMILY_NAMES` are the families the pipeline trains (one `lvm_checkpoint` partition each); importing
this package does not import torch (`base.build_model` loads the families when first used).
"""

FAMILY_NAMES = ("gru", "lstm", "transformer", "mamba2", "hybrid", "memory_gru")
