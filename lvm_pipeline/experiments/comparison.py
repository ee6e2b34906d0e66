"""Every trained model (one per family, one per variant) on the same test queries, side by side: Hit@K with
CIs, the paired difference to the best baseline and to the family's variant 1A, a plot, and experiments.csv,
which accumulates one row per model per comparison run (nothing is overwritten).

Two ensembles of the ENSEMBLE_SIZE models best on val Hit@5 (their checkpoints' own validation, never test) join
them: the mean of their unit predictions, and the weighted one whose weights are chosen on val
(`evaluation.ensemble`). With both tmd_moe and gru trained, the experts' Hit@5 per TMD lane is paired with the same
backbone's without experts."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.evaluation.benchmark import Benchmark, Group, grouped_estimates, lane_groups, run_benchmark
from lvm_pipeline.evaluation.bootstrap import ClusterBootstrap, Estimate
from lvm_pipeline.evaluation.context_text import TextEncoder, model_views
from lvm_pipeline.evaluation.ensemble import Ensemble
from lvm_pipeline.evaluation.report import cell, format_difference, plot_hit_at_k
from lvm_pipeline.evaluation.retrieval import BankIndex
from lvm_pipeline.experiments.variants import VARIANTS
from lvm_pipeline.files import atomic_write
from lvm_pipeline.markdown import md_table
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.tmd.schema import bank_tmd_vectors
from lvm_pipeline.training.checkpoint import trained_model

REFERENCE = "1A"
COLUMNS = ("hit_at_1", "hit_at_5", "hit_at_10", "hit_at_5_no_context", "cosine", "l2", "ca")  # the table's metrics
ENSEMBLE_SIZE = 3  # members of the comparison's ensembles: the best models by val Hit@5
EXPERTS, BACKBONE = "tmd_moe", "gru"  # the TMD experts and the same backbone without them
# a row of experiments.csv: a comparison's model on the test queries (split "test"), or a sweep's trial on val
# (split "val", with its study, trial number and state: COMPLETE or PRUNED)
CSV_COLUMNS = ("recorded_at", "run_id", "name", "family", "variant", "dataset_version", "encoder_fingerprint",
               "n_queries", "hit_at_1", "hit_at_5", "hit_at_5_ci_low", "hit_at_5_ci_high", "hit_at_10", "cosine",
               "vs_best_baseline", "vs_1a", "model_config", "train_config", "split", "study", "trial", "trial_state")


@dataclass
class Entry:
    """A trained model in the comparison: `variant` None for a family's lvm_checkpoint."""

    family: str
    variant: str | None
    predictor: ModelPredictor  # named `name`
    sidecar: dict  # the checkpoint's sidecar (configs, versions)
    seed: int = 0

    @property
    def name(self) -> str:
        return self.predictor.name


def entry_name(family: str, variant: str | None, seed: int = 0) -> str:
    """`gru`, `gru-1A`, `gru-1A-seed1`: a trained model's name in the comparison and its runs' folder."""
    name = family if variant is None else f"{family}-{variant}"
    return f"{name}-seed{seed}" if seed else name


def trained_entry(run_dir: Path, family: str, variant: str | None, sequences: TrainingSequences,
                  seed: int = 0, encoder: TextEncoder | None = None, cache_dir: Path | None = None) -> Entry | str:
    """The entry of a training run's best checkpoint, or why it is left out (see `trained_model`); a model that
    reads the text view gets its views from the bank's `encoder` (cached in `cache_dir`)."""
    found = trained_model(run_dir, sequences)
    if isinstance(found, str):
        return found
    model, sidecar, _history = found
    views = model_views(model, sequences, encoder, cache_dir)
    return Entry(family, variant, ModelPredictor(model, entry_name(family, variant, seed), views=views), sidecar, seed)


@dataclass
class Comparison:
    benchmark: Benchmark
    entries: list[Entry]
    versus_reference: dict[str, Estimate]  # variant entry -> its Hit@5 minus its family's 1A of the same seed (paired)
    ensembles: list[Ensemble] = field(default_factory=list)  # of the best entries on val (none with fewer than two)
    experts_by_lane: list[Group] = field(default_factory=list)  # per TMD lane: Hit@5 of tmd_moe minus gru (paired)

    def over_seeds(self) -> list[SeedSpread]:
        """Per family and variant trained with several seeds: its Hit@5, and its difference to 1A over the seeds
        that have both."""
        groups: dict[str, list[Entry]] = {}
        for entry in self.entries:
            groups.setdefault(entry_name(entry.family, entry.variant), []).append(entry)
        rows = []
        for name, entries in groups.items():
            if len(entries) > 1:
                hits = [self.benchmark.results[e.name].estimates["hit_at_5"].value for e in entries]
                versus = [self.versus_reference[e.name].value for e in entries if e.name in self.versus_reference]
                rows.append(SeedSpread(name, len(entries), Spread.of(hits), Spread.of(versus) if versus else None))
        return rows


@dataclass(frozen=True)
class Spread:
    """Mean, min and max of a figure over runs."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(mean(values), min(values), max(values))


@dataclass(frozen=True)
class SeedSpread:
    name: str  # <family>-<variant>, all seeds
    runs: int
    hit_at_5: Spread
    versus_reference: Spread | None  # Hit@5 minus the same seed's 1A; None for 1A itself


def compare(sequences: TrainingSequences, entries: Sequence[Entry], n_resamples: int = 1000, seed: int = 0,
            encoder: TextEncoder | None = None, cache_dir: Path | None = None,
            ensemble_size: int = ENSEMBLE_SIZE) -> Comparison:
    """Benchmark every entry and the ensembles of the `ensemble_size` best on val beside the baselines
    (encode_context too with the bank's `encoder`, its embeddings cached in `cache_dir`) on the test windows; pair
    each variant with its family's 1A, and tmd_moe with gru per lane."""
    ensembles = best_on_val_ensembles(sequences, entries, ensemble_size, seed)
    benchmark = run_benchmark(sequences, [entry.predictor for entry in entries] + ensembles, n_resamples=n_resamples,
                              seed=seed, encoder=encoder, cache_dir=cache_dir)
    bootstrap = ClusterBootstrap(benchmark.queries.article, n_resamples=n_resamples, seed=seed)
    hit5 = {name: r.per_query["hit_at_5"] for name, r in benchmark.results.items()}
    versus = {}
    for entry in entries:
        reference = entry_name(entry.family, REFERENCE, entry.seed)
        if entry.variant not in (None, REFERENCE) and reference in hit5:
            versus[entry.name] = bootstrap.difference(hit5[entry.name], hit5[reference])
    experts = []
    if EXPERTS in hit5 and BACKBONE in hit5:
        experts = grouped_estimates(hit5[EXPERTS] - hit5[BACKBONE], benchmark.queries,
                                    lane_groups(sequences.bank.domain_codes, benchmark.queries), n_resamples, seed)
    return Comparison(benchmark, list(entries), versus, ensembles, experts)


def best_on_val_ensembles(sequences: TrainingSequences, entries: Sequence[Entry], size: int,
                          seed: int = 0) -> list[Ensemble]:
    """The equal-weight and the val-weighted ensemble of the `size` entries best on their own val Hit@5 (what
    their checkpoints recorded); none with fewer than two entries."""
    ranked = sorted(entries, key=lambda e: -e.sidecar.get("metrics", {}).get("hit_at_5", -1.0))
    members = [entry.predictor for entry in ranked[:size]]
    if len(members) < 2:
        return []
    bank = sequences.bank
    tmd = bank_tmd_vectors(bank.column("tmd_bits")) if any(getattr(m, "uses_tmd", False) for m in members) else None
    name = f"ensemble-top{len(members)}"
    weighted = Ensemble(members, name=f"{name}-val").fit(bank.vectors, sequences.windows["val"],
                                                          BankIndex(bank.vectors), tmd, seed)
    return [Ensemble(members, name=name), weighted]


def render_markdown(c: Comparison) -> str:
    b = c.benchmark
    kinds = {e.name: ("variant " + e.variant if e.variant else "family") for e in c.entries}
    kinds |= {e.name: "ensemble" for e in c.ensembles}
    rows = [(name, kinds.get(name, "baseline"), *(cell(r.estimates, m) for m in COLUMNS),
             f"{r.seconds_per_1k:,.2f}",
             format_difference(b.differences.get(name)) if name in b.differences else "(best baseline)",
             format_difference(c.versus_reference.get(name)))
            for name, r in b.results.items()]
    ensembles = [f"- {e.name}: {e.describe()}" + (f" (val Hit@5 {e.val_hit_at_5:.1%})" if e.val_hit_at_5 else "")
                 for e in c.ensembles]
    lanes = [(label, f"{n:,}", format_difference(estimate)) for label, n, estimate in c.experts_by_lane]
    variants = dict.fromkeys(e.variant for e in c.entries if e.variant in VARIANTS)
    described = [f"- {v}: {VARIANTS[v].title}: {VARIANTS[v].description}" for v in variants]
    seeds = c.over_seeds()
    pct, pts = "{:.1f}%".format, "{:+.1f}".format
    spread = [(s.name, s.runs, pct(100 * s.hit_at_5.mean), f"{pct(100 * s.hit_at_5.low)} .. {pct(100 * s.hit_at_5.high)}",
               "" if (d := s.versus_reference) is None else f"{pts(100 * d.mean)} ({pts(100 * d.low)} .. {pts(100 * d.high)})")
              for s in seeds]
    return "\n".join([
        "# Experiment comparison", "",
        f"Every trained model on the same **{len(b.queries):,}** test queries of **{b.n_articles:,}** articles, "
        f"retrieving from the full bank of **{b.bank_size:,}** concepts; 95% cluster-bootstrap CIs (by article), "
        f"differences paired on the same resampled articles.", "",
        f"Decision by the report's rule: **{b.decision.decision}**: {b.decision.reason}", "",
        md_table(["model", "kind", *COLUMNS, "s per 1k queries", "Hit@5 - best baseline", f"Hit@5 - {REFERENCE}"],
                 rows), "",
        "`hit_at_5_no_context`: with the query's own context concepts removed from the bank; `ca`: the share of "
        "other articles' concepts farther from the prediction than the target; s per 1k queries: batched "
        "prediction time on this machine (ms per query).", "",
        *(["Ensembles of the best models on val Hit@5 (equal weights, and weights chosen on val):", "", *ensembles, ""]
          if ensembles else []),
        *([f"## TMD experts per lane: {EXPERTS} minus {BACKBONE} (the same backbone without experts)", "",
           "Hit@5 difference on the queries of each TMD lane (the domain of the query's article), paired.", "",
           md_table(["lane", "queries", f"Hit@5 {EXPERTS} - {BACKBONE}"], lanes), ""] if lanes else []),
        *(["Variants:", "", *described, ""] if described else
          ["No variant trained yet: `lvm-pipeline experiments` trains 1A-1E.", ""]),
        *(["## Over seeds", "",
           "Each run above has its own seed (`-seedN`; none: seed 0). A training run under a wall-clock budget varies "
           "from seed to seed; a difference to 1A smaller than its spread over the seeds is not a finding.", "",
           md_table(["model", "runs", "Hit@5 mean", "Hit@5 min .. max", f"- {REFERENCE} (same seed): mean (min .. max)"],
                    spread), ""] if seeds else []),
    ])


def write_comparison(c: Comparison, out_dir: Path, run_id: str) -> dict[str, Path]:
    """experiment_comparison.md and its plot under `out_dir`, and this run's rows appended to experiments.csv."""
    out_dir = Path(out_dir)
    plot = atomic_write(out_dir / "experiment_hit_at_k.png", lambda f: f.write(plot_hit_at_k(c.benchmark)))
    text = render_markdown(c) + f"\n![hit_at_k]({plot.name})\n"
    markdown = atomic_write(out_dir / "experiment_comparison.md", lambda f: f.write(text.encode()))
    return {"markdown": markdown, "plot": plot, "csv": append_rows(c, out_dir / "experiments.csv", run_id)}


def entry_record(c: Comparison, entry: Entry) -> dict:
    """One model's fields in this comparison (CSV_COLUMNS less recorded_at and run_id): configs as dicts, variant
    and the paired differences None where there are none. The rows of experiments.csv and the MLflow runs."""
    b = c.benchmark
    e = b.results[entry.name].estimates
    difference, versus = b.differences.get(entry.name), c.versus_reference.get(entry.name)
    return {
        "name": entry.name, "family": entry.family, "variant": entry.variant,
        "dataset_version": entry.sidecar.get("dataset_version"),
        "encoder_fingerprint": entry.sidecar.get("encoder_fingerprint"), "n_queries": len(b.queries),
        "hit_at_1": e["hit_at_1"].value, "hit_at_5": e["hit_at_5"].value, "hit_at_5_ci_low": e["hit_at_5"].ci_low,
        "hit_at_5_ci_high": e["hit_at_5"].ci_high, "hit_at_10": e["hit_at_10"].value, "cosine": e["cosine"].value,
        "vs_best_baseline": None if difference is None else difference.value,
        "vs_1a": None if versus is None else versus.value,
        "model_config": entry.sidecar.get("model_config"), "train_config": entry.sidecar.get("train_config")}


def append_rows(c: Comparison, path: Path, run_id: str) -> Path:
    """One row per model of this comparison (split "test"), appended to the CSV at `path` (see `append_records`)."""
    return append_records(path, [{"run_id": run_id, "split": "test", **entry_record(c, entry)} for entry in c.entries])


def append_records(path: Path, records: Sequence[dict]) -> Path:
    """`records` (fields of CSV_COLUMNS; dicts written as JSON, None empty) appended as rows stamped recorded_at now,
    the header written once. A file whose header differs (written before a column was added) is first rewritten
    under CSV_COLUMNS, then any column of its own that they lack: every row keeps its values, new columns empty."""
    import io

    now = datetime.now(UTC).isoformat(timespec="seconds")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, newline="") if path.is_file() else io.StringIO() as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        columns = [*CSV_COLUMNS, *(c for c in header if c not in CSV_COLUMNS)]
        old_rows = list(reader) if header and header != columns else None
    if old_rows is not None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(old_rows)
        atomic_write(path, lambda f: f.write(text.getvalue().encode()))
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if not header:
            writer.writeheader()
        for record in records:
            writer.writerow({"recorded_at": now, **{k: json.dumps(v) if isinstance(v, dict) else v
                                                    for k, v in record.items()}})
    return path
