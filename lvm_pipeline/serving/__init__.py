"""`lvm-pipeline serve`: the trained model as an HTTP service with dynamic batching (docs/SERVING.md)."""
