"""The benchmark report: markdown for people, JSON for scripts (DESIGN.md section 7's schema), PNG plots.

`write_report` puts `benchmark_report.md`, `benchmark_report.json`, `hit_at_k.png` and
`hit_at_5_by_context_length.png` in one folder (`data/reports/`), each written atomically.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: files only, no GUI backend, no global state

from lvm_pipeline.evaluation.benchmark import KS, V2T_SAMPLE, Benchmark, Group
from lvm_pipeline.evaluation.bootstrap import Estimate
from lvm_pipeline.evaluation.lanes import LANE_WEIGHT, RERANK_DEPTH
from lvm_pipeline.files import atomic_write
from lvm_pipeline.markdown import embedded_png, md_table
from lvm_pipeline.text import excerpt

HEADLINE = [f"hit_at_{k}" for k in KS] + ["cosine"]
SECONDARY = [f"hit_at_{k}_no_context" for k in KS] + ["within_article_rank", "within_article_top1", "l2", "margin",
                                                       "ca", "par"]
DECODING = ["decode_bleu1", "decode_bleu4", "echo"]
PERCENT = {m for m in HEADLINE + SECONDARY if m.startswith(("hit_", "within_article_top1"))}
EXAMPLE_CONTEXT = 3  # context texts shown per example (the most recent)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    plots: dict[str, Path]
    text: str  # the markdown, plots embedded, for the Dagster UI


def report_json(benchmark: Benchmark, about: dict) -> dict:
    """DESIGN.md section 7's machine-readable report (+ `about`: versions, configuration)."""
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": benchmark.split, "bank_size": benchmark.bank_size, "n_queries": len(benchmark.queries),
        "n_articles": benchmark.n_articles, **{f"chance_hit_at_{k}": c for k, c in benchmark.chance.items()},
        "predictors": {name: {m: e.to_json() for m, e in r.estimates.items()} for name, r in benchmark.results.items()},
        "kinds": {name: r.kind for name, r in benchmark.results.items()},
        "hit_at_5_minus_best_baseline": {name: e.to_json() for name, e in benchmark.differences.items()},
        "decision": benchmark.decision.to_json(),
        **about,
    }


def write_report(benchmark: Benchmark, texts: np.ndarray, out_dir: Path, about: dict | None = None,
                 curves: dict[str, list[dict]] | None = None) -> ReportFiles:
    """Render and write the report; `texts` are the bank's concept texts (for the examples), `curves` each
    model's training history (per-epoch train_loss and val_hit_at_5), plotted when given."""
    out_dir = Path(out_dir)
    plots = {"hit_at_k": out_dir / "hit_at_k.png", "by_context_length": out_dir / "hit_at_5_by_context_length.png"}
    images = {"hit_at_k": plot_hit_at_k(benchmark), "by_context_length": _plot_by_context_length(benchmark)}
    if curves:
        plots["training_curves"] = out_dir / "training_curves.png"
        images["training_curves"] = _plot_training_curves(curves)
    for name, png in images.items():
        atomic_write(plots[name], lambda f, png=png: f.write(png))
    body = render_markdown(benchmark, texts, about or {})
    on_disk = body + "\n".join(f"\n![{name}]({path.name})" for name, path in plots.items()) + "\n"
    markdown = atomic_write(out_dir / "benchmark_report.md", lambda f: f.write(on_disk.encode()))
    document = report_json(benchmark, about or {})
    json_path = atomic_write(out_dir / "benchmark_report.json", lambda f: f.write(json.dumps(document, indent=2).encode()))
    embedded = body + "".join(f"\n\n{embedded_png(name, png)}" for name, png in images.items())
    return ReportFiles(markdown, json_path, plots, embedded)


def render_markdown(benchmark: Benchmark, texts: np.ndarray, about: dict) -> str:
    b, d = benchmark, benchmark.decision
    names = list(b.results)
    inverted = any("v2t_echo" in r.estimates for r in b.results.values())
    decoding = DECODING + (["v2t_bleu1", "v2t_bleu4", "v2t_echo"] if inverted else [])
    lines = [
        "# Benchmark report: does a model predict the next concept better than trivial baselines?", "",
        f"## Decision: **{d.decision}**", "", d.reason, "", f"Rule: {d.rule}", "",
        "## Data", "",
        f"- bank: **{b.bank_size:,}** concepts (every validated concept, all splits); retrieval is over all of them",
        f"- queries: **{len(b.queries):,}** {b.split} positions t >= 1 of **{b.n_articles:,}** {b.split} articles "
        f"(context: the article's concepts before t)",
        "- chance: " + ", ".join(f"Hit@{k} {_pct(c)}" for k, c in b.chance.items()),
        *[f"- {key}: {value}" for key, value in about.items()], "",
        "## Predictors", "",
        "Means over the queries with 95% cluster-bootstrap CIs (resampling articles).", "",
        md_table(["predictor", "kind", *HEADLINE, "Hit@5 - best baseline"], [
            (n, b.results[n].kind, *(cell(b.results[n].estimates, m) for m in HEADLINE),
             format_difference(b.differences.get(n)) if n in b.differences else "(best baseline)") for n in names]),
        "", md_table(["predictor", *SECONDARY, "ms / 1k queries"], [
            (n, *(cell(b.results[n].estimates, m) for m in SECONDARY), f"{b.results[n].seconds_per_1k * 1000:.0f}")
            for n in names]),
        *(["", f"ensemble: {b.ensemble}, the weights chosen on val Hit@5 (never test)."] if b.ensemble else []),
        "", "Baselines: copy_last, mean_context, ridge and successor_knn read the vectors; encode_context is the bank's "
        "encoder on the context's texts joined (the most recent kept within its token limit), bm25 ranks the bank's "
        "texts with them as the query (a ranker: no vector figures). The decision weighs the best model against the "
        f"best of all of them: here **{b.decision.best_baseline}**.",
        "", "Hit@K: the exact target concept is among the K nearest of the full bank (inner product on unit vectors); "
        "*_no_context: the query's own context concepts removed from the bank. within_article_rank: rank of the target "
        "among its article's concepts (1 = best). margin = cos(pred, target) - cos(pred, last context). CA: share of "
        "other articles' concepts farther from the prediction than the target. PAR = max cos(pred, context) / "
        "max cos(target, context); > 1 means copying.", "",
        "## Decoding back to text", "",
        md_table(["predictor", *decoding], [
            (n, *(cell(b.results[n].estimates, m) for m in decoding))
            for n in names]),
        "", "Retrieval decoding: a prediction reads as the text of its nearest bank concept. decode_bleu1/4: sacrebleu "
        "sentence BLEU (0-1) of that text against the target's text. echo: cosine of the prediction to the decoded "
        "text re-encoded, on a seeded sample of queries (n/a without the encoder); for retrieval decoding it is the "
        "top-1 cosine, since a bank text re-encodes to its own vector."
        + (f" v2t_*: the models' predictions inverted by vec2text on {V2T_SAMPLE} of those queries, the same figures."
           if len(decoding) > len(DECODING) else " vec2text: not configured (GTR-T5-base banks only; see "
                                                 "docs/EVALUATION.md)."), "",
        "## Hit@5 by context length", "",
        md_table(["context length", "queries", *names], _group_rows(b.by_context_length, names)), "",
        "## TMD lanes", "",
        "Hit@5 by the query's lane (its article's TMD domain):", "",
        md_table(["lane", "queries", *names], _group_rows(b.by_lane, names)), "",
        f"Re-ranking by lane: the {RERANK_DEPTH} nearest concepts of each prediction ordered by "
        f"{1 - LANE_WEIGHT:.1f} cos + {LANE_WEIGHT:.1f} [same lane as the query], against the plain cosine order:", "",
        md_table(["predictor", "hit_at_5", "hit_at_5 re-ranked by lane", "re-ranked - plain"], [
            (n, format_estimate("hit_at_5", b.results[n].estimates["hit_at_5"]),
             format_estimate("hit_at_5", b.results[n].estimates["hit_at_5_lane_reranked"]),
             format_difference(b.rerank_gain[n])) for n in names if n in b.rerank_gain]), "",
        "A query's lane is its article's domain, which its target always shares: these gains are what lanes give "
        "when the lane of the text being written is known. The decision above uses the plain cosine order.", "",
        "## Examples", "", *_examples(b, texts),
    ]
    if not b.models:
        lines[6:6] = ["No model has been trained yet: the table shows the baselines a model must beat.", ""]
    return "\n".join(lines)


def _group_rows(groups: dict[str, list[Group]], names: list[str]) -> list[tuple]:
    """One row per group (label, queries, every predictor's Hit@5 on them)."""
    return [(label, n, *(format_estimate("hit_at_5", groups[name][i][2]) for name in names))
            for i, (label, n, _) in enumerate(groups[names[0]])]


def _examples(b: Benchmark, texts: np.ndarray) -> list[str]:
    out = []
    for j, q in enumerate(b.examples.tolist()):
        start, target = int(b.queries.context_start[q]), int(b.queries.target[q])
        context = [excerpt(t, 160) for t in texts[max(start, target - EXAMPLE_CONTEXT):target]]
        out += [f"**Example {j + 1}** (context of {target - start}, the last {len(context)} shown)", ""]
        out += [line for t in context for line in (f"> {t}", "")]  # one quote per context concept
        out.append(f"- target: *{excerpt(texts[target], 200)}*")
        for name, r in b.results.items():
            decoded = [(int(row), float(score)) for row, score in zip(r.decoded.rows[j], r.decoded.scores[j]) if row >= 0]
            shown = decoded if r.kind == "model" else decoded[:1]  # models: their top 5; baselines: their nearest
            lines = [f"{excerpt(texts[row], 200)} ({score:.2f}){_mark(row, start, target)}" for row, score in shown]
            out.append(f"- {name}: {lines[0]}")
            out += [f"  {rank}. {line}" for rank, line in enumerate(lines[1:], 2)]
        out.append("")
    return out


def _mark(row: int, start: int, target: int) -> str:
    return " ✔" if row == target else " (a context concept)" if start <= row < target else ""


def cell(estimates: dict[str, Estimate], metric: str) -> str:
    """A table cell: the metric's estimate, or n/a where the predictor has none (a ranker has no vector figures)."""
    return format_estimate(metric, estimates[metric]) if metric in estimates else "n/a"


def format_estimate(metric: str, e: Estimate) -> str:
    if not np.isfinite(e.value):
        return "n/a"
    if metric in PERCENT:
        return f"{100 * e.value:.1f}% [{100 * e.ci_low:.1f}, {100 * e.ci_high:.1f}]"
    return f"{e.value:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]"


def format_difference(e: Estimate | None) -> str:
    if e is None:
        return ""
    return f"{100 * e.value:+.1f} pts [{100 * e.ci_low:+.1f}, {100 * e.ci_high:+.1f}]"


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_hit_at_k(b: Benchmark) -> bytes:
    """Grouped bars: Hit@1/5/10 per predictor with 95% CI error bars, chance as dotted lines."""
    names = list(b.results)
    figure = Figure(figsize=(1.6 + 1.4 * len(names), 3.6))
    axis = figure.subplots()
    width = 0.8 / len(KS)
    for i, k in enumerate(KS):
        estimates = [b.results[n].estimates[f"hit_at_{k}"] for n in names]
        values = np.array([100 * e.value for e in estimates])
        errors = np.array([[100 * (e.value - e.ci_low) for e in estimates], [100 * (e.ci_high - e.value) for e in estimates]])
        axis.bar(np.arange(len(names)) + (i - 1) * width, values, width, yerr=errors, capsize=3, label=f"Hit@{k}")
    axis.set_xticks(np.arange(len(names)), names, rotation=20, ha="right")
    axis.set_ylabel("% of queries (full bank)")
    axis.set_title(f"Hit@K on {len(b.queries):,} {b.split} queries, bank of {b.bank_size:,}; chance Hit@10 "
                   f"{_pct(b.chance[10])}", fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def _plot_by_context_length(b: Benchmark) -> bytes:
    """Hit@5 by context length per predictor, with 95% CI bands."""
    figure = Figure(figsize=(6.4, 3.6))
    axis = figure.subplots()
    for name in b.results:
        rows = b.by_context_length[name]
        x = np.arange(len(rows))
        axis.plot(x, [100 * e.value for _, _, e in rows], marker="o", label=name)
        axis.fill_between(x, [100 * e.ci_low for _, _, e in rows], [100 * e.ci_high for _, _, e in rows], alpha=0.15)
    labels = [f"{label}\n(n={n})" for label, n, _ in b.by_context_length[next(iter(b.results))]]
    axis.set_xticks(np.arange(len(labels)), labels, fontsize=8)
    axis.set_xlabel("context length (concepts before the target)")
    axis.set_ylabel("Hit@5 (%)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _png(figure)


def _plot_training_curves(curves: dict[str, list[dict]]) -> bytes:
    """Per model: train loss and val Hit@5 (full bank) by epoch."""
    figure = Figure(figsize=(9.0, 3.4))
    loss_axis, hit_axis = figure.subplots(1, 2)
    for name, history in curves.items():
        epochs = [entry["epoch"] for entry in history]
        loss_axis.plot(epochs, [entry["train_loss"] for entry in history], marker=".", label=name)
        hit_axis.plot(epochs, [100 * entry["val_hit_at_5"] for entry in history], marker=".", label=name)
    loss_axis.set(xlabel="epoch", ylabel="train loss", title="training loss")
    hit_axis.set(xlabel="epoch", ylabel="val Hit@5 (%)", title="validation Hit@5, full bank")
    for axis in (loss_axis, hit_axis):
        axis.grid(alpha=0.3)
    hit_axis.legend(fontsize=8)
    return _png(figure)
