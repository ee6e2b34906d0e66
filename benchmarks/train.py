"""Training benchmarks, each section side by side in one run.

throughput: optimizer steps/s of `lvm_pipeline.training.train` (its per-epoch train_seconds: validation and
    checkpoints excluded) vs a bare PyTorch loop over the same model, the same batches (`ArticleBatches`), the
    same AdamW and gradient clipping and a masked cosine loss, nothing else, for a GRU and a Transformer (the
    *_small configs; --toy for the toy_* ones) on a synthetic bank. The first epoch of each is a warm-up and not
    timed; each side runs `--rounds` times alternately and keeps its best. Target: ratio >= 0.9.
    Then the single-query latency of `ModelPredictor.predict_one` on CPU, p50/p95 at context lengths 1, 4 and
    16, for every registered *_small config. Target: p95 <= 10 ms at context <= 16.

    .venv/bin/python benchmarks/train.py [--only throughput] [--dim 384] [--articles 300] [--epochs 3] [--toy]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.datasets.bank import write_bank
from lvm_pipeline.datasets.sequences import TrainingSequences, WindowSpec, build_sequences
from lvm_pipeline.models.base import CONFIGS, build_model
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.training import TrainConfig, train
from lvm_pipeline.training.data import ArticleBatches

CONTEXT_LENGTHS = (1, 4, 16)


def synthetic_sequences(directory: Path, n_articles: int, dim: int, seed: int = 0) -> TrainingSequences:
    """Random unit vectors in articles of 4..40 concepts, split 80/10/10 with windows of C = 16."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(4, 41, size=n_articles)
    n = int(sizes.sum())
    vectors = unit_rows(rng.standard_normal((n, dim), dtype=np.float32), dtype=np.float32)
    bank = write_bank(directory, vectors, {
        "cpe_id": [f"c{i}" for i in range(n)], "batch_id": ["b"] * n,
        "article_id": np.repeat([f"a{a}" for a in range(n_articles)], sizes).tolist(),
        "seq_in_article": np.concatenate([np.arange(s) for s in sizes]).tolist(),
        "concept_text": [f"Sentence {i}." for i in range(n)], "tmd_bits": [-1] * n}, encoder_fingerprint="bench")
    return build_sequences(bank, spec=WindowSpec(max_context=16))


def bare_loop_steps_per_s(model_name: str, sequences: TrainingSequences, config: TrainConfig) -> float:
    """Steps/s of the plainest loop over the trainer's batches (epochs after the first)."""
    torch.manual_seed(config.seed)
    bank = sequences.bank
    model = build_model(model_name, bank.vectors.shape[1]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data = ArticleBatches(bank.vectors, sequences.article_bounds("train"), config.batch_size, config.max_len, config.seed,
                          group_by_length=config.group_by_length)
    steps = seconds = 0.0
    for epoch in range(config.epochs):
        started = time.perf_counter()
        for batch in data.epoch(epoch):
            predicted = model(batch.inputs)
            loss = (1 - F.cosine_similarity(predicted[batch.mask], batch.targets[batch.mask], dim=-1)).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if epoch:
            steps, seconds = steps + len(data), seconds + time.perf_counter() - started
    return steps / seconds


def trainer_steps_per_s(model_name: str, sequences: TrainingSequences, config: TrainConfig, out_dir: Path) -> float:
    """Steps/s of `train` from its history (epochs after the first; validation not counted)."""
    history = train(model_name, sequences, out_dir, config, progress=False).history
    steps = history[-1]["step"] - history[0]["step"]
    return steps / sum(entry["train_seconds"] for entry in history[1:])


def predict_one_latency_ms(model_name: str, dim: int, context_length: int, calls: int = 200) -> tuple[float, float]:
    """p50 and p95 milliseconds of one `predict_one` call at this context length."""
    torch.manual_seed(0)
    predictor = ModelPredictor(build_model(model_name, dim), model_name)
    context = unit_rows(np.random.default_rng(0).standard_normal((context_length, dim)), dtype=np.float32)
    for _ in range(20):
        predictor.predict_one(context)
    times = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        predictor.predict_one(context)
        times[i] = time.perf_counter() - started
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 95) * 1000)


def throughput(args: argparse.Namespace) -> None:
    models = ("toy_gru", "toy_transformer") if args.toy else ("gru_small", "transformer_small")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=3e-4, max_len=args.max_len, patience=None,
                         keep_best=1, val_max_queries=200)
    with tempfile.TemporaryDirectory(prefix="lvm-bench-") as tmp:
        sequences = synthetic_sequences(Path(tmp) / "bank", args.articles, args.dim)
        n_train = len(sequences.articles["train"])
        print(f"throughput: bank {len(sequences.bank):,} x {args.dim}, {n_train} train articles, batch {config.batch_size} "
              f"sequences of <= {config.max_len + 1}, {config.epochs} epochs (first not timed), best of {args.rounds}, "
              f"{torch.get_num_threads()} torch threads")
        print(f"  {'model':<20} {'bare loop steps/s':>18} {'trainer steps/s':>16} {'ratio':>6}  (target >= 0.9)")
        for name in models:
            bare, trainer = [], []
            for round_number in range(args.rounds):
                bare.append(bare_loop_steps_per_s(name, sequences, config))
                trainer.append(trainer_steps_per_s(name, sequences, config, Path(tmp) / f"{name}-{round_number}"))
            print(f"  {name:<20} {max(bare):>18.2f} {max(trainer):>16.2f} {max(trainer) / max(bare):>6.2f}")
    small = sorted(name for name in CONFIGS if name.endswith("_small"))
    print(f"predict_one latency on CPU, D = {args.dim}, {torch.get_num_threads()} torch threads (target p95 <= 10 ms)")
    print(f"  {'model':<20} " + " ".join(f"{f'p50/p95 ms @ {length}':>20}" for length in CONTEXT_LENGTHS))
    for name in small:
        cells = [predict_one_latency_ms(name, args.dim, length) for length in CONTEXT_LENGTHS]
        print(f"  {name:<20} " + " ".join(f"{f'{p50:.2f} / {p95:.2f}':>20}" for p50, p95 in cells))


SECTIONS = {"throughput": throughput}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS), help="sections to run")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--articles", type=int, default=300, help="articles in the synthetic bank (80%% train)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--toy", action="store_true", help="the toy_* configs instead of the *_small ones")
    args = parser.parse_args()
    for section in args.only:
        SECTIONS[section](args)


if __name__ == "__main__":
    main()
