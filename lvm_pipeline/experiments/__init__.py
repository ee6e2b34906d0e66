"""Experiments: the predecessor's variants 1A-1E as recipes, and one comparison of every trained model."""
