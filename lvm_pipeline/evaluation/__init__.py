"""Evaluation: one definition of each metric (DESIGN.md section 7), used by the assets, the trainer and the tests.

queries (what is asked, and the Predictor interface), retrieval (FAISS over the full bank: Hit@K),
metrics (next-vector cosine, L2, margin, CA, PAR), baselines (copy-last, mean-of-context, ridge,
successor-kNN), bootstrap (cluster-bootstrap CIs by article, paired differences), decision (the
GO / WARN / STOP rule), benchmark (all of it on one set of queries) and report (markdown, JSON, plots).
No Dagster here.
"""
