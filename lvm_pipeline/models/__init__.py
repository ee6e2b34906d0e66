"""Next-concept models: one interface (`base`), a family per module, named configs, a builder.

`FAMILY_NAMES` are the families the pipeline trains (one `lvm_checkpoint` partition each): `make demo` trains the
`DEMO_FAMILIES`, `lvm-pipeline experiments --families` the others (docs/TRAINING.md). Importing this package does
not import torch (`base.build_model` loads the families when first used).
"""

DEMO_FAMILIES = ("gru", "lstm", "transformer", "mamba2", "hybrid", "memory_gru")
EXPERIMENT_FAMILIES = ("base_lcm", "diffusion_lcm", "rwkv", "retnet", "tmd_moe")  # the predecessor's list, finished
FAMILY_NAMES = DEMO_FAMILIES + EXPERIMENT_FAMILIES
