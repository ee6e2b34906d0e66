"""`lvm-pipeline`: the database, the demo corpus, ingestion without the UI, and the UI itself.

`ingest` materializes the same Dagster assets the sensor's runs do, on the same instance, so
its runs and materializations show in the UI like any other. An expected failure (bad file,
missing database or one that goes away mid-run, another encoder, input that is not UTF-8) prints one
line and exits non-zero; `--debug` shows the traceback. `dev` leaves no process and no run behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import get_args

from lvm_pipeline import db
from lvm_pipeline.config import export_dagster_environment, settings
from lvm_pipeline.errors import DatabaseUnavailableError, PipelineError
from lvm_pipeline.experiments.variants import PREDECESSOR_VARIANTS
from lvm_pipeline.experiments.variants import VARIANTS as VARIANT_NAMES
from lvm_pipeline.models import DEMO_FAMILIES, EXPERIMENT_FAMILIES, FAMILY_NAMES
from lvm_pipeline.segmentation import DEFAULT_MODE, SegmentationMode

log = logging.getLogger("lvm_pipeline")
DEMO_MODE = "sentence"  # the demo's leads are short: one concept per sentence (DESIGN.md section 4)
FAR_COSINE = 0.4  # predict: a nearest text below this cosine is called far
DEMO_TRAIN_SECONDS = 25.0  # per model family (docs/BENCHMARKS.md: where the demo's time goes)
VARIANT_TRAIN_SECONDS = 45.0  # per variant of `experiments` (docs/EXPERIMENTS.md's figures)
RUN_COMMANDS = ("ingest", "demo", "experiments")  # the commands that materialize assets


def run_logs(debug: bool = False) -> dict:
    """Runs started here log through Dagster's console logger: everything with --debug, else nothing
    (the CLI prints one line per batch, and a failed step's reason, itself)."""
    return {"console": {"config": {"log_level": "DEBUG" if debug else "CRITICAL"}}}


def prepare_dagster_env() -> None:
    """Point Dagster at this project's dagster.yaml and at the database's Dagster storage (starting it if needed)."""
    config = settings()
    home = config.dagster_home or Path.cwd()
    if not (home / "dagster.yaml").is_file():
        raise PipelineError(f"no dagster.yaml in {home}: run from the project root, or set DAGSTER_HOME")
    with db.connect(db.database_url(config)):  # a clear error now if the database cannot be reached
        pass
    storage_url = db.dagster_storage_url(config)
    if config.dagster_pg_url:  # a server of its own: a clear error now too, not "the database went away" later
        check_reachable(storage_url.replace("postgresql+psycopg2://", "postgresql://", 1), "DAGSTER_PG_URL")
    export_dagster_environment(home, storage_url, config.dagster_dir)
    config.dagster_dir.mkdir(parents=True, exist_ok=True)


def check_reachable(url: str, variable: str) -> None:
    import psycopg2

    try:
        psycopg2.connect(url).close()
    except psycopg2.OperationalError as error:
        raise DatabaseUnavailableError(f"cannot connect to Dagster's storage ({variable}): {first_line(error)}") from error


def cli_run_tags() -> dict[str, str]:
    """Tags of the runs the CLI starts (in this process: see fail_runs_whose_worker_is_gone)."""
    from lvm_pipeline.defs.sensors import HOST_TAG

    return {"lvm/launched_by": "cli", HOST_TAG: socket.gethostname()}


# -- db ---------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    config = settings()
    if config.database_url and args.action in ("start", "stop"):
        print(f"LVM_DATABASE_URL is set: an external server is in use, nothing to {args.action}")
        return 0
    server = db.embedded_server(config)
    if args.action == "start":
        url = db.database_url(config)
        with db.connect(url):  # applies pending migrations
            pass
        print(server.status())
    elif args.action == "stop":
        print(server.stop())
    elif args.action == "status":
        print(f"external server: {config.database_url}" if config.database_url else server.status())
    elif args.action == "url":
        print(db.dagster_storage_url(config) if args.dagster else db.database_url(config))
    return 0


# -- demo data --------------------------------------------------------------------------------
def write_demo(args: argparse.Namespace) -> list[Path]:
    from lvm_pipeline.sources.vital_articles import write_demo_batches

    return write_demo_batches(args.landing or settings().landing_dir, n_batches=args.batches,
                              limit=args.limit, fmt=args.format)


def cmd_demo_data(args: argparse.Namespace) -> int:
    for path in write_demo(args):
        print(path)
    return 0


# -- ingest -----------------------------------------------------------------------------------
def ingest_paths(paths: list[Path], mode: str | None = None, debug: bool = False) -> int:
    """Materialize the ingestion assets for each file, one batch each, then send the alerts due;
    return the number of files that failed."""
    from dagster import DagsterInstance, RunConfig, materialize

    from lvm_pipeline.defs import resources
    from lvm_pipeline.defs.assets import ConceptChunksConfig, RawArticlesConfig, ingestion_assets
    from lvm_pipeline.defs.checks import gate_checks
    from lvm_pipeline.defs.partitions import batches
    from lvm_pipeline.sources import check_source

    prepare_dagster_env()
    instance = DagsterInstance.get()
    failed = 0
    for path in paths:
        try:
            check_source(path)
        except (PipelineError, FileNotFoundError) as error:
            print(f"REJECTED {path}: {str(error).removeprefix(f'{path}: ')}", file=sys.stderr)
            failed += 1
            continue
        key = path.name
        if not instance.has_dynamic_partition(batches.name, key):
            instance.add_dynamic_partitions(batches.name, [key])
        started = time.monotonic()
        result = materialize(
            [*ingestion_assets, *gate_checks], partition_key=key, instance=instance, resources=resources(),
            run_config=RunConfig(ops={"raw_articles": RawArticlesConfig(path=str(path.resolve())),
                                      "concept_chunks": ConceptChunksConfig(**({"mode": mode} if mode else {}))},
                                 loggers=run_logs(debug)),
            raise_on_error=False, tags=cli_run_tags(),
        )
        gates = {e.check_name: e for e in result.get_asset_check_evaluations()}
        not_go = [f"{name}: {e.description}" for name, e in gates.items() if not e.passed]
        if result.success:
            a, c, v = (result.asset_materializations_for_node(node)[0].metadata
                       for node in ("raw_articles", "concept_chunks", "concept_vectors"))
            print(f"OK {key}: {a['articles'].value} articles ({a['quarantined'].value} quarantined), "
                  f"{c['concepts'].value} concepts, {v['vectors'].value} vectors, "
                  f"{len(gates) - len(not_go)}/{len(gates)} gates GO (run {result.run_id[:8]}, "
                  f"{time.monotonic() - started:.0f} s)")
            for line in not_go:
                print(f"  {line}")
        else:
            failure = next((e for e in result.all_events if e.is_step_failure), None)
            reason = failure_reason(failure.step_failure_data.error) if failure else "see the run's logs"
            print(f"FAILED {key}: {reason} (run {result.run_id[:8]})", file=sys.stderr)
            for line in not_go:
                print(f"  {line}", file=sys.stderr)
            failed += 1
    send_alerts()
    return failed


def send_alerts() -> int:
    """Send the alerts due for gate results no one has alerted on yet (what the gate sensor does too)."""
    from lvm_pipeline.defs.resources import AlertResource
    from lvm_pipeline.validation.alerts import send_pending_alerts

    alerts = AlertResource()
    with db.connect(db.database_url()) as conn:
        sent = send_pending_alerts(conn, lambda status: alerts.send(status, log))
    if sent:
        print(f"{len(sent)} alert(s) written to {settings().alerts_dir}", file=sys.stderr)
    return len(sent)


def failure_reason(error) -> str:
    """The innermost cause of a failed step (Dagster wraps the asset's own exception), on one line."""
    while error.cause is not None:
        error = error.cause
    message = " ".join(error.message.split())
    return re.sub(r"^[A-Za-z_][\w]*(\.[\w]+)+: ", "", message)  # "lvm_pipeline.x.SomeError: why" -> "why"


def cmd_ingest(args: argparse.Namespace) -> int:
    return 1 if ingest_paths([Path(p) for p in args.paths], args.mode, args.debug) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the database, write the demo batches, ingest them all, build the bank and the sequences, train one
    model per family, benchmark them (benchmark_report, retrieval_benchmark), measure the scaling coefficient, and
    grade the best model's deployment readiness (its ONNX export, the service under a short load test)."""
    cmd_db(argparse.Namespace(action="start", dagster=False))
    failed = ingest_paths(write_demo(args), args.mode or DEMO_MODE, args.debug)
    cmd_batches(argparse.Namespace())
    cmd_gates(argparse.Namespace(batch=None, json=False))
    ok = build_bank_and_sequences(args.debug)
    families = list(DEMO_FAMILIES) if args.families is None else args.families
    ok = ok and not train_families(families, args.train_seconds, args.debug)
    ok = ok and build_report(args.debug)
    ok = ok and build_retrieval_benchmark(args.debug)
    if ok and families:  # experiment_comparison is left to `experiments`: without variants it is the report again
        from lvm_pipeline.defs.experiments import ScalingConfig, scaling_report

        scaling = ScalingConfig(family="gru" if "gru" in families else families[0])
        ok = materialize_and_report([scaling_report], ops={"scaling_report": scaling}, debug=args.debug) and ok
        ok = ok and build_deployment_readiness(args.debug)
    return 1 if failed or not ok else 0


def cmd_experiments(args: argparse.Namespace) -> int:
    """Train the given families (their lvm_checkpoint, the demo's recipe) and the variants of a family (the
    predecessor's 1A-1E unless named; none by default beside --families), each within the time budget, the variants
    once per seed; then compare every trained model."""
    from lvm_pipeline.defs.analogies import vector_arithmetic
    from lvm_pipeline.defs.experiments import experiment_comparison
    from lvm_pipeline.defs.training import LvmVariantConfig, lvm_variant

    failed = train_families(args.families, args.train_seconds, args.debug) if args.families else []
    variants = args.variants if args.variants is not None else [] if args.families else list(PREDECESSOR_VARIANTS)
    failed += [(variant, seed) for seed in args.seeds for variant in variants
               if not materialize_and_report([lvm_variant], partition_key=variant, debug=args.debug, ops={
                   "lvm_variant": LvmVariantConfig(family=args.family, time_budget_s=args.train_seconds or 0, seed=seed)})]
    ok = materialize_and_report([experiment_comparison], debug=args.debug)
    ok = materialize_and_report([vector_arithmetic], debug=args.debug) and ok
    return 1 if failed or not ok else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Search a family's hyperparameters with Optuna (`experiments.sweep`): each trial trains within the time budget
    and is judged on val Hit@5, never test; the study's best trial is saved as a named config. Exits 1 if no trial
    of the study completed."""
    import optuna

    from lvm_pipeline.datasets.bank import open_bank
    from lvm_pipeline.datasets.sequences import load_sequences
    from lvm_pipeline.encoders import SentenceEncoder
    from lvm_pipeline.evaluation.context_text import model_views
    from lvm_pipeline.experiments.sweep import SweepFiles, pipeline_recipe, run_sweep, sweep_base

    if args.trials < 1 or not args.train_seconds > 0:
        raise PipelineError("--trials must be at least 1 and --train-seconds above 0")
    config = settings()
    try:
        bank = open_bank(config.exports_dir)
        sequences = load_sequences(bank, config.exports_dir / "sequences")
    except (FileNotFoundError, ValueError) as error:  # no bank or sequences yet, or sequences of another bank
        raise PipelineError(str(error)) from error
    base = sweep_base(args.family, args.text_view)
    encoder = SentenceEncoder(config.encoder) if base.text_view else None
    if encoder and encoder.fingerprint != bank.manifest.get("encoder_fingerprint"):
        raise PipelineError(f"the text view needs the bank's encoder, not {encoder.name}: set LVM_ENCODER to it, or "
                            "sweep with --no-text-view")
    views = model_views(base, sequences, encoder, config.exports_dir / "sequences")
    if not (args.verbose or args.debug):
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials' lines are ours
    result = run_sweep(sequences, base, args.trials, pipeline_recipe(args.train_seconds, args.seed),
                       SweepFiles.of(config), args.study, views, echo=lambda line: print(line, flush=True))
    return 0 if result.best else 1


def build_bank_and_sequences(debug: bool = False) -> bool:
    """Materialize the bank and the training sequences (with the leakage check) now, as the bank sensor's
    run does when the daemon runs. False if that failed."""
    from lvm_pipeline.defs.datasets import leakage, ordered_vectors, training_sequences

    return materialize_and_report([ordered_vectors, training_sequences, leakage], debug=debug)


def build_report(debug: bool = False) -> bool:
    from lvm_pipeline.defs.benchmark import benchmark_report

    return materialize_and_report([benchmark_report], debug=debug)


def build_retrieval_benchmark(debug: bool = False) -> bool:
    from lvm_pipeline.defs.retrieval import retrieval_benchmark

    return materialize_and_report([retrieval_benchmark], debug=debug)


def build_deployment_readiness(debug: bool = False) -> bool:
    """Export the report's best model to ONNX (its lvm_onnx partition), then grade deployment_readiness."""
    from lvm_pipeline.defs.serving import deployment_readiness, lvm_onnx
    from lvm_pipeline.inference import report_best_checkpoint

    config = settings()
    family = report_best_checkpoint(config.reports_dir, config.checkpoints_dir).parents[1].name  # <family>/<run>/best
    return (materialize_and_report([lvm_onnx], partition_key=family, debug=debug)
            and materialize_and_report([deployment_readiness], debug=debug))


def train_families(families: list[str], seconds: float | None, debug: bool = False) -> list[str]:
    """Train one model per family (the lvm_checkpoint partition, its `<family>_small` config), each within
    `seconds` of wall clock; return the families that failed."""
    from lvm_pipeline.defs.training import LvmCheckpointConfig, beats_copy_last, lvm_checkpoint, training_loss

    config = LvmCheckpointConfig(time_budget_s=seconds or 0)
    return [family for family in families
            if not materialize_and_report([lvm_checkpoint, training_loss, beats_copy_last], partition_key=family,
                                          ops={"lvm_checkpoint": config}, debug=debug)]


def materialize_and_report(selection: list, partition_key: str | None = None, ops: dict | None = None,
                           debug: bool = False) -> bool:
    """Materialize `selection` on the project's instance and print a line for each asset and check."""
    from dagster import DagsterInstance, RunConfig, materialize

    from lvm_pipeline.defs import resources

    prepare_dagster_env()
    started = time.monotonic()
    result = materialize(selection, instance=DagsterInstance.get(), resources=resources(), partition_key=partition_key,
                         run_config=RunConfig(ops=ops or {}, loggers=run_logs(debug)), tags=cli_run_tags(),
                         raise_on_error=False)
    for event in result.get_asset_materialization_events():
        name = event.asset_key.to_user_string()
        print(SUMMARIES[name]({k: v.value for k, v in event.materialization.metadata.items()}))
    for check in result.get_asset_check_evaluations():
        print(f"  check {check.check_name}: {check.description}")
    print(f"  ({time.monotonic() - started:.0f} s)")  # where a demo's time goes (docs/BENCHMARKS.md)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure_reason(failure.step_failure_data.error) if failure else "a blocking check failed"
        what = ", ".join(definition.node_def.name for definition in selection)
        print(f"FAILED {what}{f' [{partition_key}]' if partition_key else ''}: {reason} (run {result.run_id[:8]})",
              file=sys.stderr)
    return result.success


SUMMARIES = {  # one line per materialized asset, from its metadata
    "ordered_vectors": lambda m: (f"ordered_vectors: {m['concepts']} concepts from {m['batches_included']} batches "
                                  f"({m['batches_left_out']} left out) -> {m['bank_vectors']}"),
    "training_sequences": lambda m: "training_sequences: " + ", ".join(
        f"{s} {m[f'{s}_windows']} windows / {m[f'{s}_articles']} articles" for s in ("train", "val", "test")),
    "lvm_checkpoint": lambda m: (f"lvm_checkpoint: {m['model']} ({m['parameters']:,} parameters), {m['epochs']} epochs "
                                 f"({m['stopped_because']}), best val Hit@5 {m.get('best_hit_at_5', float('nan')):.1%} "
                                 f"-> {m['checkpoint']}"),
    "benchmark_report": lambda m: (f"benchmark_report: {m['decision']}: {m['reason']}\n  report: {m['markdown']}\n"
                                   f"  json:   {m['json']}"),
    "retrieval_benchmark": lambda m: (f"retrieval_benchmark: best {m['best']} Recall@10 {m['best_recall_at_10']:.1%} vs vec "
                                      f"{m['vec_recall_at_10']:.1%} (target +5 points: {'met' if m['target_met'] else 'not met'})"
                                      f"\n  report: {m['markdown']}"),
    "experiment_comparison": lambda m: (f"experiment_comparison: {m['models']} models ({m['variants']} variants), best "
                                        f"{m['best']} at test Hit@5 {m['best_hit_at_5']:.1%}; {m['decision']}\n"
                                        f"  rows appended to {m['csv']}"),
    "scaling_report": lambda m: (f"scaling_report: coefficient {m['coefficient']:.3f} (95% CI {m['coefficient_ci_low']:.3f} "
                                 f"to {m['coefficient_ci_high']:.3f}; target >= 0.85): test Hit@5 {m['hit_at_5_all']:.1%} "
                                 f"on all batches, {m['hit_at_5_half']:.1%} on half\n  report: {m['markdown']}"),
    "vector_arithmetic": lambda m: ((f"vector_arithmetic: analogies top-1 {m['analogy_top_1']:.1%}, top-3 "
                                     f"{m['analogy_top_3']:.1%} ({m['analogy_questions']:,} questions); "
                                     if "analogy_top_1" in m else "vector_arithmetic: ") +
                                    f"within articles Hit@1 {m['arithmetic_hit_at_1']:.1%} (copy_last "
                                    f"{m['copy_last_hit_at_1']:.1%}) on {m['article_queries']:,} queries\n"
                                    f"  report: {m['markdown']}"),
    "lvm_onnx": lambda m: (f"lvm_onnx: parity {'holds' if m['parity'] else 'FAILS'}: Hit@5 {m['hit_at_5_torch']:.1%} "
                           f"(torch), {m['hit_at_5_onnx']:.1%} (onnx), {m['hit_at_5_int8']:.1%} (int8)"
                           if m["exported"] else f"lvm_onnx: not exported: {m['reason']}"),
    "deployment_readiness": lambda m: (f"deployment_readiness: {m['verdict']}: {m['reason']} ({m['rows_go']} of "
                                       f"{m['rows']} rows GO)\n  report: {m['markdown']}"),
}
SUMMARIES["lvm_variant"] = lambda m: SUMMARIES["lvm_checkpoint"](m).replace("lvm_checkpoint", f"lvm_variant {m['variant']}", 1)


def cmd_batches(args: argparse.Namespace) -> int:
    """Print every batch with its counts and vector coverage."""
    from lvm_pipeline.db.batches import batch_summaries

    with db.connect(db.database_url()) as conn, conn.cursor() as cur:
        summaries = batch_summaries(cur)
    print(f"{'batch':<36} {'status':<9} {'articles':>8} {'quarant.':>8} {'concepts':>8} {'coverage':>8}")
    for b in summaries:
        coverage = f"{b.coverage:.1%}" if b.coverage is not None else "-"
        print(f"{b.batch_id:<36} {b.status:<9} {b.n_articles:>8} {b.n_quarantined:>8} {b.n_concepts:>8} {coverage:>8}")
    return 0


# -- gates (on-call) --------------------------------------------------------------------------
def cmd_gates(args: argparse.Namespace) -> int:
    """Each batch's gates: decision, blocking or not, the summary; --json for the figures too."""
    import json
    from dataclasses import asdict

    from lvm_pipeline import validation

    with db.connect(db.database_url()) as conn:
        statuses = validation.gate_status(conn, args.batch)
        verdicts = {v.batch_id: v for v in validation.batch_eligibility(conn)}
    if args.batch and args.batch not in verdicts:
        print(f"no batch {args.batch!r}", file=sys.stderr)
        return 2
    kinds = {g.name: g.kind for g in validation.GATES}
    if args.json:
        print(json.dumps({"gates": [asdict(s) for s in statuses],
                          "batches": [asdict(v) for b, v in verdicts.items() if not args.batch or b == args.batch]}, indent=2))
        return 0
    for batch_id, verdict in verdicts.items():
        if args.batch and batch_id != args.batch:
            continue
        print(f"{batch_id}: {'included in' if verdict.included else 'LEFT OUT of'} training data ({verdict.reason})")
        for s in (s for s in statuses if s.batch_id == batch_id):
            stale = "" if s.current else "  [stale: the file changed since]"
            print(f"  {s.decision:<4} {s.gate:<17} {kinds.get(s.gate, 'warn'):<8}  {s.summary}{stale}")
    return 0


def cmd_exclude(args: argparse.Namespace) -> int:
    from lvm_pipeline.db.batches import set_excluded

    with db.connect(db.database_url()) as conn, conn, conn.cursor() as cur:
        set_excluded(cur, args.batch, None if args.include else args.reason)
    print(f"{args.batch}: {'included again' if args.include else 'excluded: ' + args.reason}; "
          "ordered_vectors follows at the next sensor tick")
    return 0


# -- predict ----------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    """The next concept after the given sentences, as the bank's nearest texts, from a trained model."""
    from lvm_pipeline.encoders import SentenceEncoder
    from lvm_pipeline.inference import NextConceptPredictor

    if not args.sentences and sys.stdin.isatty():
        raise PipelineError("give the context as arguments, or one sentence per line on stdin")
    if args.sentences:  # decoded by Python with surrogateescape: check the bytes as given
        lines = [utf8_text(os.fsencode(arg), f"argument {i}") for i, arg in enumerate(args.sentences, 1)]
    else:
        lines = utf8_text(sys.stdin.buffer.read(), "stdin").splitlines()
    sentences = [s for s in lines if s.strip()]
    if not sentences:
        raise PipelineError("give at least one non-empty sentence of context")
    config = settings()
    checkpoint, bank = chosen_model(args)
    predictor = NextConceptPredictor(checkpoint, bank, SentenceEncoder(config.encoder))
    result = predictor(sentences, args.k)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.model} ({result.checkpoint}), after {len(result.context)} sentence(s):")
    for rank, neighbour in enumerate(result.neighbours, 1):
        print(f"  {rank}. {neighbour.score:.3f}  {neighbour.text}  [{neighbour.article_id}]")
    if result.neighbours and result.neighbours[0].score < FAR_COSINE:
        print(f"  (the nearest text is far: cosine < {FAR_COSINE}; the context may lie outside what the bank covers, "
              "or be in another language than its encoder's)")
    latency = result.latency_ms
    print(f"latency: {latency['total']:.1f} ms (encode {latency['encode']:.1f}, model {latency['predict']:.1f}, "
          f"retrieval {latency['decode']:.1f})")
    return 0


def chosen_model(args: argparse.Namespace):
    """(checkpoint path, bank) for `predict` and `serve`: --checkpoint, --family's best, or the report's best model."""
    from lvm_pipeline.datasets.bank import open_bank
    from lvm_pipeline.inference import family_checkpoint, report_best_checkpoint

    config = settings()
    if args.checkpoint and not args.checkpoint.is_file():
        raise PipelineError(f"no checkpoint file {args.checkpoint}")
    checkpoint = (args.checkpoint or (family_checkpoint(config.checkpoints_dir, args.family) if args.family else
                                      report_best_checkpoint(config.reports_dir, config.checkpoints_dir)))
    try:
        return checkpoint, open_bank(config.exports_dir)
    except FileNotFoundError as error:  # "no concept bank in ...: materialize ordered_vectors first"
        raise PipelineError(str(error)) from error


def utf8_text(data: bytes, where: str) -> str:
    """`data` decoded, or a PipelineError naming the first byte that is not UTF-8 (and its line, if several)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        where_in = f" (line {line})" if b"\n" in data.rstrip(b"\n") else ""
        raise PipelineError(f"{where} is not UTF-8 text: byte 0x{data[error.start]:02x} at position {error.start}"
                            f"{where_in}") from None


# -- serve ------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    """The model as an HTTP service (docs/SERVING.md): uvicorn with `--workers` processes, each loading the model in
    the background."""
    import uvicorn

    from lvm_pipeline.serving.app import SPEC_VARIABLE, ServingSettings, serve_spec

    if args.max_batch < 1 or args.queue < 1 or args.max_wait_ms < 0 or args.workers < 1:
        raise PipelineError("--max-batch, --queue and --workers must be at least 1, --max-wait-ms at least 0")
    checkpoint, _bank = chosen_model(args)
    if args.backend != "torch":
        from lvm_pipeline.training.checkpoint import backend_paths

        if not backend_paths(checkpoint)[args.backend].is_file():  # now, not in the worker after the port opened
            raise PipelineError(f"no {args.backend} export of {checkpoint}: run lvm-pipeline export-onnx first")
    os.environ[SPEC_VARIABLE] = serve_spec(checkpoint, args.backend, args.search, ServingSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.queue))
    with socket.socket() as probe:  # a port in use is one line, not uvicorn's traceback
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as error:
            raise PipelineError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from error
    print(f"lvm-pipeline serve: {checkpoint} ({args.backend}, {args.search} search, {args.workers} worker(s)) on "
          f"http://{args.host}:"
          f"{args.port} (ready when /readyz says so)", flush=True)
    uvicorn.run("lvm_pipeline.serving.app:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning", access_log=False)
    return 0


# -- export-onnx ------------------------------------------------------------------------------
def cmd_export_onnx(args: argparse.Namespace) -> int:
    """Each chosen checkpoint as ONNX and INT8 beside it, with its parity on the test queries (docs/SERVING.md)."""
    from lvm_pipeline.datasets.bank import open_bank
    from lvm_pipeline.datasets.sequences import load_sequences
    from lvm_pipeline.encoders import SentenceEncoder
    from lvm_pipeline.inference import family_checkpoint
    from lvm_pipeline.serving.onnx_export import export_checkpoint
    from lvm_pipeline.training.runs import current_run_dir

    config = settings()
    if args.checkpoint and not args.checkpoint.is_file():
        raise PipelineError(f"no checkpoint file {args.checkpoint}")
    if args.checkpoint:
        checkpoints = [args.checkpoint]
    else:
        families = args.family or [f for f in FAMILY_NAMES if current_run_dir(config.checkpoints_dir, f)]
        if not families:
            raise PipelineError("no trained model to export: materialize lvm_checkpoint (or run lvm-pipeline demo)")
        checkpoints = [family_checkpoint(config.checkpoints_dir, family) for family in families]
    try:
        bank = open_bank(config.exports_dir)
        sequences = load_sequences(bank, config.exports_dir / "sequences")
    except (FileNotFoundError, ValueError) as error:  # no bank or sequences yet, or sequences of another bank
        raise PipelineError(str(error)) from error
    encoder = SentenceEncoder(config.encoder)
    encoder = encoder if encoder.fingerprint == bank.manifest.get("encoder_fingerprint") else None
    failed = 0
    for checkpoint in checkpoints:
        started = time.monotonic()
        report = export_checkpoint(checkpoint, sequences, encoder, config.exports_dir / "sequences")
        failed += not report.parity
        print(f"{report.markdown()}\n({time.monotonic() - started:.0f} s)\n", flush=True)
    return 1 if failed else 0


# -- dev --------------------------------------------------------------------------------------
def cmd_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI (webserver + daemon) on 127.0.0.1, backed by the same PostgreSQL.

    `dagster dev` runs in a session (process group) of its own, so that nothing it starts outlives it: SIGTERM,
    SIGINT or SIGHUP here is passed on to it, and what is left of the group STOP_GRACE_SECONDS later (or at a second
    signal), run workers included, is killed. The runs whose worker is gone are then marked FAILURE (at start too).
    """
    prepare_dagster_env()
    beside_python = Path(sys.executable).parent / "dagster"  # the venv's, even when it is not activated
    dagster = str(beside_python) if beside_python.exists() else "dagster"
    command = [dagster, "dev", "-w", "workspace.yaml", "-h", args.host, "-p", str(args.port)]
    abandoned = fail_abandoned_runs()  # e.g. after a `dagster dev` killed before this one
    if abandoned:
        print(f"lvm-pipeline dev: {abandoned}", file=sys.stderr)
    print(" ".join(command), flush=True)
    from lvm_pipeline.processes import DevProcess

    try:
        dev = DevProcess(command)
    except FileNotFoundError as error:
        raise PipelineError(f"cannot run {command[0]}: is dagster installed in this environment?") from error
    previous = {signum: signal.signal(signum, dev.on_signal) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = dev.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        dev.kill_group()  # dagster dev itself leaves its code servers running for a while
    interrupted = fail_abandoned_runs()
    runs = f"; {interrupted}" if interrupted else ""
    if dev.first_signal is None:
        print(f"lvm-pipeline dev: dagster dev exited with code {code}{runs}", file=sys.stderr)
        return code if code >= 0 else 128 - code  # killed by a signal: as a shell says it
    name = signal.Signals(dev.first_signal).name
    if dev.killed:
        print(f"lvm-pipeline dev: dagster dev did not stop within {dev.grace_seconds:g} s of {name}: killed its "
              f"process group{runs}", file=sys.stderr)
        return 1
    print(f"lvm-pipeline dev: stopped on {name}{runs}", file=sys.stderr)
    return 0


def fail_abandoned_runs() -> str:
    """fail_runs_whose_worker_is_gone on the project's instance, said in a few words ('' if none)."""
    from dagster import DagsterInstance

    from lvm_pipeline.defs.runs import fail_runs_whose_worker_is_gone

    with DagsterInstance.get() as instance:
        gone = fail_runs_whose_worker_is_gone(instance)
    return f"{len(gone)} run(s) whose worker is gone marked FAILURE: {', '.join(r[:8] for r in gone)}" if gone else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvm-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true", help="tracebacks and every run event, for bug reports")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="the embedded PostgreSQL server")
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.add_argument("--dagster", action="store_true", help="with url: Dagster's storage URL")
    p.set_defaults(func=cmd_db)

    def demo_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batches", type=int, default=10, help="number of landing files (default 10)")
        p.add_argument("--limit", type=int, default=None, help="only the first N articles")
        p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
        p.add_argument("--landing", type=Path, default=None, help="default: $LVM_DATA_DIR/landing")

    def mode_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mode", choices=get_args(SegmentationMode), default=None,
                       help=f"segmentation (default: the mode the batch was ingested in; a new batch: {DEFAULT_MODE})")

    p = sub.add_parser("demo-data", help="write the vital-articles demo corpus as landing batches")
    demo_options(p)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("demo", help="start the database, write the demo batches and ingest them")
    demo_options(p)
    p.add_argument("--mode", choices=get_args(SegmentationMode), default=None,
                   help=f"segmentation (default for the demo: {DEMO_MODE})")
    p.add_argument("--families", nargs="*", choices=FAMILY_NAMES, default=None,
                   help=f"model families to train (default: {' '.join(DEMO_FAMILIES)}; none: --families with no name)")
    p.add_argument("--train-seconds", type=float, default=DEMO_TRAIN_SECONDS,
                   help=f"wall-clock budget per family (default {DEMO_TRAIN_SECONDS:g} s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("experiments", help="train more families and the variants of a family, then compare every "
                                           "trained model")
    p.add_argument("--families", nargs="+", choices=FAMILY_NAMES, default=None,
                   help=f"families to train as the demo trains its own (e.g. {' '.join(EXPERIMENT_FAMILIES)})")
    p.add_argument("--family", choices=FAMILY_NAMES, default="gru", help="the family the variants change (default gru)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANT_NAMES), default=None,
                   help=f"variants and strategies to train (default: {' '.join(PREDECESSOR_VARIANTS)}; none with "
                        "--families)")
    p.add_argument("--train-seconds", type=float, default=VARIANT_TRAIN_SECONDS,
                   help=f"wall-clock budget per family and variant (default {VARIANT_TRAIN_SECONDS:g} s; 0: none)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="train each variant once per seed (default 0): the comparison gives the spread over seeds")
    p.set_defaults(func=cmd_experiments)

    p = sub.add_parser("sweep", help="search a family's hyperparameters with Optuna, judged on val Hit@5")
    p.add_argument("--family", choices=FAMILY_NAMES, required=True)
    p.add_argument("--trials", type=int, required=True, help="trials to add to the study")
    p.add_argument("--train-seconds", type=float, required=True, help="wall-clock budget per trial")
    p.add_argument("--study", default="", help="the study's name (default <family>-sweep); an existing one resumes")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial's training (default 0)")
    p.add_argument("--text-view", action=argparse.BooleanOptionalAction, default=True,
                   help="the models read the text view, as lvm_checkpoint's do (default: yes)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("ingest", help="ingest batch files (what the sensor's runs do, without the UI)")
    p.add_argument("paths", nargs="+")
    mode_option(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("batches", help="list batches with counts and vector coverage")
    p.set_defaults(func=cmd_batches)

    p = sub.add_parser("gates", help="each batch's STOP/GO gates and whether it enters training data")
    p.add_argument("--batch", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gates)

    p = sub.add_parser("exclude", help="keep a batch out of training data on purpose")
    p.add_argument("batch")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_exclude, include=False)

    p = sub.add_parser("include", help="undo `exclude`")
    p.add_argument("batch")
    p.set_defaults(func=cmd_exclude, include=True, reason=None)

    p = sub.add_parser("predict", help="the next concept after a few sentences, from a trained model")
    p.add_argument("sentences", nargs="*", help="the context, one concept per argument (none: one per line of stdin)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", type=Path, default=None,
                       help="a checkpoint file (default: the best model of the latest benchmark report)")
    which.add_argument("--family", choices=FAMILY_NAMES, default=None, help="that family's current best checkpoint")
    p.add_argument("-k", type=int, default=5, help="nearest texts to print (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="the model as an HTTP service with dynamic batching (docs/SERVING.md)")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", type=Path, default=None,
                       help="a checkpoint file (default: the best model of the latest benchmark report)")
    which.add_argument("--family", choices=FAMILY_NAMES, default=None, help="that family's current best checkpoint")
    p.add_argument("--max-batch", type=int, default=64, help="requests per batched call (default 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (default 5 ms)")
    p.add_argument("--queue", type=int, default=1024, help="requests waiting at most; more get 503 (default 1024)")
    p.add_argument("--backend", choices=("torch", "onnx", "onnx-int8"), default="torch",
                   help="run the model in PyTorch (default) or its ONNX export (lvm-pipeline export-onnx first)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, each with its own model (default 1)")
    p.add_argument("--search", choices=("exact", "ivf"), default="exact",
                   help="search the bank exactly (default, as the evaluation) or through an IVF index (approximate, "
                        "faster; docs/SERVING.md)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export-onnx", help="export checkpoints to ONNX and INT8, with parity on the test queries")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--family", nargs="+", choices=FAMILY_NAMES, default=None,
                       help="these families' current best checkpoints (default: every trained family)")
    which.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint file")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("dev", help="open the Dagster UI on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_dev)
    return parser


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, without libpq's severity prefix."""
    line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return re.sub(r"^(FATAL|ERROR|PANIC): +", "", line)


def lost_database(error: BaseException) -> BaseException | None:
    """The error in `error`'s chain (causes and contexts) saying that the connection to PostgreSQL was lost or
    refused: psycopg2's, with no SQLSTATE (libpq's own) or one of class 08 (connection) or 57P (server shutting
    down), or dagster-postgres's after its retries. None if there is none."""
    import psycopg2
    from dagster_postgres.utils import DagsterPostgresException

    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            code = error.pgcode or ""
            if not code or code.startswith(("08", "57P")):
                return error  # the driver's own error: it says why
        elif isinstance(error, DagsterPostgresException):
            found = error
        error = error.__cause__ or error.__context__
    return found


def database_went_away(command: str, error: BaseException) -> str:
    during = " during the run" if command in RUN_COMMANDS else ""
    fix = ("check the server LVM_DATABASE_URL names" if settings().database_url
           else "start it again with `lvm-pipeline db start`")
    after = "; the interrupted step's writes were rolled back" if command == "ingest" else ""
    return f"the database went away{during} ({first_line(error)}): {fix}, then re-run the same command{after}"


def from_a_named_logger(record: logging.LogRecord) -> bool:
    """A filter for the root logger itself: what libraries log straight to it (dagster-postgres's warnings, several
    lines each, while it retries a lost connection) shows only with -v; named loggers' records never pass here."""
    return record.name != "root"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setLevel(level)  # also for a library whose own logger is at DEBUG (bm25s sets its own)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    if not (args.verbose or args.debug):
        logging.getLogger().addFilter(from_a_named_logger)
    try:
        return args.func(args)
    except PipelineError as error:  # expected: bad input, no database, another encoder, ...
        if args.debug:
            raise
        print(f"lvm-pipeline {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"lvm-pipeline {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the database server stopped or crashed while we used it: expected too
        if args.debug or (lost := lost_database(error)) is None:
            raise
        print(f"lvm-pipeline {args.command}: {database_went_away(args.command, lost)}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger().removeFilter(from_a_named_logger)


if __name__ == "__main__":
    sys.exit(main())
