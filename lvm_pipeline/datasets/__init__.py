"""Datasets built from validated batches: the ordered bank and its legacy-compatible exports."""
