"""lvm_pipeline: ordered text -> concept vectors -> gated training data -> next-concept models."""
