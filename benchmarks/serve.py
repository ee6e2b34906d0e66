"""The service under open-loop load (`lvm-pipeline serve` as a subprocess, `lvm_pipeline.serving.loadtest`), scenarios
side by side in one run, on the data folder of LVM_DATA_DIR (default ./data) and the report's best model (or --family):

(a) vectors in, batching on (--max-batch 64 --max-wait-ms 5): contexts of --context consecutive bank vectors at
    --rate requests/s for --duration s. Target (at 1,000/s over 60 s): achieved >= 0.99 x 1,000/s, p99 <= 50 ms, no
    errors. A model with the text view (every demo model) also reads each vector's view: the bodies carry the
    bank's context views of those rows, as a client with its own encoder would send (twice the body).
(b) vectors in, batching off (--max-batch 1), the same load.
(d) plain vectors in, batching on, to a model that reads vectors only (when the served one reads the text view):
    a gru_small without the text view, trained here for VECTOR_MODEL_SECONDS on the same sequences once (kept in
    data/checkpoints/serve-benchmark/), the same load as (a).
(c) texts in, batching on: the bare encoder's sentences/s in this process (batches of 64 bank sentences for
    --encoder-seconds), then contexts of --sentences bank sentences at --texts-load x that rate / --sentences for
    --texts-duration s. Target: the served sentences/s (ok requests x sentences / duration) >= 0.8 x the bare rate.

Latency counts from each request's scheduled send (no coordinated omission); each scenario has a server of its own,
warmed up with a few seconds of light load first; the mean batch size is the server's `lvm_batch_size` over the run
(summed over its --workers); the server's threads are pinned (THREADS below). --quick: 10 s each.

    .venv/bin/python benchmarks/serve.py [--duration 60] [--rate 1000] [--family F] [--quick] [--threads 2]
                                         [--workers N] [--search exact|ivf] [--only a b c d]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from lvm_pipeline.config import settings
from lvm_pipeline.datasets.bank import open_bank
from lvm_pipeline.datasets.sequences import load_sequences
from lvm_pipeline.inference import family_checkpoint, report_best_checkpoint
from lvm_pipeline.models import FAMILY_NAMES
from lvm_pipeline.serving.loadtest import (
    LoadResult,
    mean_batch_size,
    run_load,
    served,
    text_bodies,
    vector_bodies,
    worker_totals,
)
from lvm_pipeline.training.checkpoint import read_sidecar

TARGET_QPS, TARGET_SECONDS, TARGET_P99_MS, TARGET_SHARE, TARGET_TEXT_RATIO = 1000, 60, 50.0, 0.99, 0.8
N_BODIES = 1000  # distinct request bodies, sent in turn
VECTOR_MODEL_SECONDS = 20.0  # (d)'s vector-only gru: its training budget
WARMUP_S, WARMUP_QPS = 3.0, 100  # a quarter of the rate at most
# The server's threads. On 2 cores the event loop (parsing, answering), the batcher thread (model, FAISS, encoder) and
# this load generator share the machine; OpenMP threads that spin while idle (GOMP's default) would take the cores
# the others need, hence OMP_WAIT_POLICY=PASSIVE. torch and FAISS share one OpenMP runtime in the server, so one
# number sets both. Measured on 2 cores (gru with the text view): texts in, served/bare 0.44 with 2 threads and 0.16
# with 1 (the encoder's matrix products use both cores); vectors in at 1,000/s offered (10 s), 627-686/s with 2 and
# 630-694/s with 1, at 150/s p99 41 vs 37 ms: the same within noise. Hence 2 for every scenario.
THREADS = {
    "1": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    "2": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "default": {},
}


def chosen_checkpoint(family: str | None):
    config = settings()
    if family:
        return family_checkpoint(config.checkpoints_dir, family)
    return report_best_checkpoint(config.reports_dir, config.checkpoints_dir)


def bank_views(sidecar: dict, sequences) -> np.ndarray:
    """The bank's context views (what a text-view model reads beside each vector), from the sequences' cache."""
    from lvm_pipeline.encoders import SentenceEncoder
    from lvm_pipeline.evaluation.context_text import model_views
    from lvm_pipeline.models.base import config_from_dict

    return model_views(config_from_dict(sidecar["model_config"]), sequences, SentenceEncoder(settings().encoder),
                       settings().exports_dir / "sequences")


def vector_only_checkpoint(sequences):
    """A gru_small that reads vectors only, trained on `sequences` for VECTOR_MODEL_SECONDS (once: then reused)."""
    from lvm_pipeline.training import TrainConfig, train

    run_dir = settings().checkpoints_dir / "serve-benchmark" / f"gru-vectors-{sequences.version}"
    best = run_dir / "best.safetensors"
    if not best.is_file():
        print(f"(d): training a vector-only gru_small for {VECTOR_MODEL_SECONDS:g} s into {run_dir}", flush=True)
        train("gru_small", sequences, run_dir, TrainConfig(time_budget_s=VECTOR_MODEL_SECONDS), model_name="gru",
              progress=False)
    return best


def ivf_cost(checkpoint, sequences, views: np.ndarray | None) -> dict:
    """What --search ivf costs in accuracy: full-bank Hit@5 of the model's test predictions searched exactly and
    through the IVF index serve builds, and how many of the exact top 5 the IVF search finds."""
    from lvm_pipeline.evaluation.retrieval import BankIndex, retrieval_ranks
    from lvm_pipeline.models.predictor import ModelPredictor
    from lvm_pipeline.training.checkpoint import load_checkpoint

    model, sidecar = load_checkpoint(checkpoint)
    bank, queries = sequences.bank, sequences.windows["test"]
    predicted = ModelPredictor(model, sidecar["model_name"], views=views).predict(bank.vectors, queries)
    exact, ivf = BankIndex(bank.vectors), BankIndex(bank.vectors, ivf_above=0)
    hits = {name: float(retrieval_ranks(index, predicted, queries, (5,))["hit_at_5"].mean())
            for name, index in (("exact", exact), ("ivf", ivf))}
    top_exact, top_ivf = exact.search(predicted, 5)[1], ivf.search(predicted, 5)[1]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top_exact, top_ivf)])
    return {"queries": len(queries), "hit_at_5_exact": round(hits["exact"], 4), "hit_at_5_ivf": round(hits["ivf"], 4),
            "top5_overlap": round(float(overlap), 4), "nlist": ivf.nlist, "nprobe": ivf.nprobe}


def encoder_rate(encoder, texts: np.ndarray, seconds: float, batch: int = 64, max_batches: int = 10_000) -> float:
    """The bare encoder's sentences/s on random batches of `batch` bank sentences for about `seconds` (bounded)."""
    rng = np.random.default_rng(0)
    encoder.encode(list(texts[rng.integers(0, len(texts), batch)]))  # warm-up
    done, started = 0, time.perf_counter()
    for _ in range(max_batches):
        encoder.encode(list(texts[rng.integers(0, len(texts), batch)]))
        done += batch
        if time.perf_counter() - started >= seconds:
            break
    return done / (time.perf_counter() - started)


def view_work(encoder, bodies: list[bytes]) -> float:
    """Tokens a text-view model encodes per request (its sentences, and the recent text up to each later position)
    over the sentences' own tokens: about how much more encoder work a request is than its sentences alone."""
    contexts = [json.loads(body)["texts"] for body in bodies[:200]]
    views = [" ".join(context[:i + 1]) for context in contexts for i in range(1, len(context))]
    sentences = encoder.token_counts([s for context in contexts for s in context])
    cap = encoder.max_tokens
    return float((np.minimum(sentences, cap).sum() + np.minimum(encoder.token_counts(views), cap).sum())
                 / np.minimum(sentences, cap).sum())


def scenario(serve_args: list[str], env: dict, bodies: list[bytes], rate: float, duration: float,
             timeout_s: float) -> dict:
    """One server: warmed up, then loaded; the result with the run's mean batch size and the server's peak RSS."""
    with served(serve_args, env=env) as server:
        warm = run_load(server.url, "/v1/next", bodies, min(rate / 4, WARMUP_QPS), WARMUP_S, timeout_s=timeout_s)
        if warm.ok == 0:
            raise SystemExit(f"no request of the warm-up was answered ({warm.errors}); the server's log ends:\n"
                             f"{server.log_tail()}")
        time.sleep(1.0)  # what the warm-up left queued
        workers = int(serve_args[serve_args.index("--workers") + 1]) if "--workers" in serve_args else 1
        before = worker_totals(server.url, "lvm_batch_size", workers, kind="next")
        result: LoadResult = run_load(server.url, "/v1/next", bodies, rate, duration, timeout_s=timeout_s)
        mean = mean_batch_size(server.url, "next", since=before, workers=workers)
        return {**result.to_dict(), "mean_batch": round(mean, 2) if mean is not None else None,
                "peak_rss_mb": round(server.peak_rss_mb())}


def table(rows: dict[str, dict]) -> str:
    head = (f"{'scenario':<28}{'target/s':>9}{'achieved/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'batch':>7}{'RSS MiB':>8}  errors")
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        ms = [f"{r[k]:>9.1f}" if r[k] is not None else f"{'-':>9}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
        batch = f"{r['mean_batch']:>7.1f}" if r["mean_batch"] is not None else f"{'-':>7}"
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"{name:<28}{r['target_qps']:>9.0f}{r['achieved_qps']:>11.1f}{''.join(ms)}{batch}"
                     f"{r['peak_rss_mb']:>8}  {errors}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=TARGET_SECONDS, help="seconds of load in (a) and (b)")
    parser.add_argument("--rate", type=float, default=TARGET_QPS, help="requests/s in (a) and (b)")
    parser.add_argument("--family", choices=FAMILY_NAMES, default=None,
                        help="that family's best checkpoint (default: the report's best model)")
    parser.add_argument("--quick", action="store_true", help="10 s per scenario, a 5 s encoder measurement")
    parser.add_argument("--threads", choices=sorted(THREADS), default="2", help="the server's threads (see THREADS)")
    parser.add_argument("--workers", type=int, default=None, help="serve's --workers (default: serve's, one)")
    parser.add_argument("--context", type=int, default=5, help="vectors per context in (a) and (b)")
    parser.add_argument("--sentences", type=int, default=3, help="sentences per context in (c)")
    parser.add_argument("--texts-duration", type=float, default=20.0)
    parser.add_argument("--texts-load", type=float, default=1.0, help="(c)'s rate as a share of the bare encoder's")
    parser.add_argument("--encoder-seconds", type=float, default=10.0)
    parser.add_argument("--search", choices=["exact", "ivf"], default="exact", help="serve's --search")
    parser.add_argument("--only", nargs="+", choices=["a", "b", "c", "d"], default=["a", "b", "c", "d"])
    args = parser.parse_args()
    if args.quick:
        args.duration = args.texts_duration = 10.0
        args.encoder_seconds = 5.0

    checkpoint = chosen_checkpoint(args.family)
    sidecar = read_sidecar(checkpoint)
    text_view = bool(sidecar["model_config"].get("text_view"))
    bank = open_bank(settings().exports_dir)
    env = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "LVM_API_TOKEN": "", **THREADS[args.threads]}
    options = ["--search", args.search] + (["--workers", str(args.workers)] if args.workers else [])
    model_args = ["--checkpoint", str(checkpoint), *options]
    sequences = load_sequences(bank, settings().exports_dir / "sequences")
    print(f"serve: {sidecar['model_name']} ({checkpoint}), text view: {text_view}; bank {len(bank):,} x "
          f"{bank.vectors.shape[1]}; server threads {args.threads} {THREADS[args.threads]}; {os.cpu_count()} CPUs")

    rows: dict[str, dict] = {}
    extra: dict = {}
    if "c" in args.only:  # first, while no server runs
        from lvm_pipeline.encoders import SentenceEncoder

        encoder = SentenceEncoder(settings().encoder)
        text_requests = text_bodies(bank.texts, N_BODIES, args.sentences, seed=0)
        extra["encoder_sentences_per_s"] = round(encoder_rate(encoder, np.asarray(bank.texts, dtype=object),
                                                              args.encoder_seconds), 1)
        print(f"bare encoder: {extra['encoder_sentences_per_s']:.1f} sentences/s (batches of 64, "
              f"{args.encoder_seconds:g} s)")
        if text_view:
            extra["view_work"] = round(view_work(encoder, text_requests), 2)
            print(f"texts in: a text-view model encodes {extra['view_work']:.2f}x the tokens of a request's sentences "
                  f"(its views too): served/bare near {1 / extra['view_work']:.2f} is the encoder's own limit")
        del encoder
    if {"a", "b"} & set(args.only):
        views = bank_views(sidecar, sequences) if text_view else None
        bodies = vector_bodies(bank.vectors, N_BODIES, args.context, seed=0, views=views)
        print(f"vectors in: contexts of {args.context}{' + their views' if text_view else ''}, "
              f"{np.mean([len(b) for b in bodies]) / 1024:.1f} KiB a body")
        for key, name, batching in (("a", "a vectors, batching on", ["--max-batch", "64", "--max-wait-ms", "5"]),
                                    ("b", "b vectors, batching off", ["--max-batch", "1"])):
            if key in args.only:
                rows[name] = scenario([*model_args, *batching, "--queue", "1024"], env, bodies, args.rate,
                                      args.duration, timeout_s=5.0)
    if "d" in args.only and text_view:
        plain = vector_bodies(bank.vectors, N_BODIES, args.context, seed=0)
        rows["d plain vectors, on"] = scenario(["--checkpoint", str(vector_only_checkpoint(sequences)), *options,
                                                "--max-batch", "64", "--max-wait-ms", "5", "--queue", "1024"], env,
                                               plain, args.rate, args.duration, timeout_s=5.0)
    if "c" in args.only:
        rate = args.texts_load * extra["encoder_sentences_per_s"] / args.sentences
        rows["c texts, batching on"] = r = scenario([*model_args, "--max-batch", "64", "--max-wait-ms", "5", "--queue",
                                                     "1024"], env, text_requests, rate, args.texts_duration,
                                                    timeout_s=10.0)
        extra["served_sentences_per_s"] = round(r["ok"] * args.sentences / r["duration_s"], 1) if r["duration_s"] else 0
        extra["texts_ratio"] = round(extra["served_sentences_per_s"] / extra["encoder_sentences_per_s"], 3)

    if args.search == "ivf":
        views = bank_views(sidecar, sequences) if text_view else None
        extra["ivf"] = cost = ivf_cost(checkpoint, sequences, views)
        print(f"ivf search: full-bank Hit@5 {cost['hit_at_5_ivf']:.2%} vs exact {cost['hit_at_5_exact']:.2%} on "
              f"{cost['queries']:,} test queries; {cost['top5_overlap']:.1%} of the exact top 5 found "
              f"(nlist {cost['nlist']}, nprobe {cost['nprobe']})")
    print()
    print(table(rows))
    print()
    targets = {}
    if on := rows.get("a vectors, batching on"):
        short = args.duration < TARGET_SECONDS
        targets["vectors_qps"] = on["achieved_qps"] >= TARGET_SHARE * TARGET_QPS
        targets["vectors_p99"] = on["p99_ms"] is not None and on["p99_ms"] <= TARGET_P99_MS
        targets["vectors_no_errors"] = not on["errors"]
        print(f"(a) vectors in, batching on: {on['achieved_qps']:.1f}/s at {args.rate:g}/s offered (target >= "
              f"{TARGET_SHARE * TARGET_QPS:g}/s): {'met' if targets['vectors_qps'] else 'MISSED'}; p99 {on['p99_ms']} ms (target "
              f"<= {TARGET_P99_MS:g}): {'met' if targets['vectors_p99'] else 'MISSED'}; errors "
              f"{sum(on['errors'].values())}: {'met' if targets['vectors_no_errors'] else 'MISSED'}"
              f"{f' (over {args.duration:g} s: the target is over {TARGET_SECONDS} s)' if short else ''}")
    if plain := rows.get("d plain vectors, on"):
        targets["plain_vectors"] = (plain["achieved_qps"] >= TARGET_SHARE * TARGET_QPS and plain["p99_ms"] is not None
                                    and plain["p99_ms"] <= TARGET_P99_MS and not plain["errors"])
        print(f"(d) plain vectors, a vector-only model: {plain['achieved_qps']:.1f}/s, p99 {plain['p99_ms']} ms, errors "
              f"{sum(plain['errors'].values())}: {'met' if targets['plain_vectors'] else 'MISSED'}")
    if (off := rows.get("b vectors, batching off")) and on:
        print(f"(b) batching off: {off['achieved_qps']:.1f}/s, p99 {off['p99_ms']} ms (batching on: "
              f"{on['achieved_qps']:.1f}/s, p99 {on['p99_ms']} ms)")
    if "texts_ratio" in extra:
        targets["texts_ratio"] = extra["texts_ratio"] >= TARGET_TEXT_RATIO
        print(f"(c) texts in: {extra['served_sentences_per_s']:.1f} sentences/s served vs {extra['encoder_sentences_per_s']:.1f} "
              f"bare = {extra['texts_ratio']:.2f} (target >= {TARGET_TEXT_RATIO}): "
              f"{'met' if targets['texts_ratio'] else 'MISSED'}"
              + (f"; x {extra['view_work']:.2f} (the views' work) = {extra['texts_ratio'] * extra['view_work']:.2f} of "
                 "the bare encoder's tokens/s" if "view_work" in extra else ""))
    print(json.dumps({"model": sidecar["model_name"], "text_view": text_view, "threads": args.threads,
                      "search": args.search, "workers": args.workers or 1,
                      "rate": args.rate, "duration_s": args.duration, "scenarios": rows, **extra, "targets": targets}))


if __name__ == "__main__":
    main()
