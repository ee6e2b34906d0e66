"""The trainer on synthetic banks with a planted rule (the next vector is a fixed rotation of the current one):
losses, schedule, learning, checkpoints, exact resume, early stopping, the time budget, DDP, the predictor."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.datasets.bank import write_bank
from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences, save_sequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.baselines import CopyLast
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.evaluation.retrieval import BankIndex, retrieval_ranks
from lvm_pipeline.models.base import ModelConfig, NextConceptModel, build_model, family, register_config
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.tmd.schema import bank_tmd_vectors
from lvm_pipeline.training import TrainConfig, check_compatible, load_checkpoint, train
from lvm_pipeline.training.checkpoint import load_training_state
from lvm_pipeline.training.data import ArticleBatches
from lvm_pipeline.training.losses import cosine_loss, infonce_loss, last_positions, mse_loss, training_loss
from lvm_pipeline.training.negatives import HardNegatives
from lvm_pipeline.training.trainer import HISTORY_KEYS, learning_rate
from lvm_pipeline_tests.conftest import PROJECT_ROOT

DIM = 16


@dataclass
class TinyGRUConfig(ModelConfig):
    """A one-layer GRU with dropout on its output (dropout exercises the RNG state of resume)."""

    family: str = "test_gru"  # the registered family name
    d_model: int = 32  # GRU hidden size
    n_layers: int = 1  # stacked GRU layers
    dropout: float = 0.1  # on the backbone's output


@family("test_gru", TinyGRUConfig)
class TinyGRU(NextConceptModel):
    def __init__(self, config: TinyGRUConfig, d_input: int):
        super().__init__(config, d_input)
        self.gru = nn.GRU(config.d_model, config.d_model, config.n_layers, batch_first=True)
        self.drop = nn.Dropout(config.dropout)

    def backbone(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop(self.gru(h)[0])


@register_config
def tiny_gru_for_tests() -> TinyGRUConfig:
    return TinyGRUConfig()


def planted_bank(directory, n_articles: int = 150, seed: int = 0, fingerprint: str = "enc-A"):
    """Articles of 1..14 concepts; each concept is a fixed rotation of the one before; some TMD codes unknown."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(np.random.default_rng(1234).normal(size=(DIM, DIM)))
    sizes = rng.integers(1, 15, size=n_articles)
    vectors = np.empty((sizes.sum(), DIM), dtype=np.float32)
    row = 0
    for size in sizes:
        v = rng.normal(size=DIM)
        v /= np.linalg.norm(v)
        for _ in range(size):
            vectors[row], v, row = v, rotation @ v, row + 1
    n = len(vectors)
    articles = [f"article-{a}" for a, size in enumerate(sizes) for _ in range(size)]
    positions = [i for size in sizes for i in range(size)]
    tmd_bits = np.where(rng.random(n) < 0.2, -1, rng.integers(0, 2**15, size=n) << 1).tolist()
    return write_bank(directory, vectors, {
        "cpe_id": [f"c{i}" for i in range(n)], "batch_id": ["b"] * n, "article_id": articles,
        "seq_in_article": positions, "concept_text": [f"Sentence {i}." for i in range(n)], "tmd_bits": tmd_bits,
    }, encoder_fingerprint=fingerprint)


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    directory = tmp_path_factory.mktemp("planted")
    bank = planted_bank(directory / "bank")
    sequences = build_sequences(bank, spec=WindowSpec(max_context=8))
    save_sequences(sequences, directory / "sequences")
    return sequences


def quick(**changes) -> TrainConfig:
    """A recipe that learns the planted rule in a few CPU seconds."""
    values = {"epochs": 4, "batch_size": 16, "lr": 1e-2, "warmup_steps": 2, "max_len": 8, "patience": None,
              "keep_best": 2, "val_max_queries": 300, "num_threads": 1, "seed": 0}
    return TrainConfig(**(values | changes))


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(path)


# ---------------------------------------------------------------- losses and schedule


def test_losses_match_hand_computed_values():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    target = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])  # the third position is padding
    assert cosine_loss(pred, target, mask).item() == pytest.approx((0 + 1) / 2)
    assert mse_loss(pred, target, mask).item() == pytest.approx((0 + 0 + 4 + 4) / 4)

    eye = torch.eye(4)[:, None, :]  # four sequences of one position, each prediction its own target, orthogonal
    full = torch.ones(4, 1, dtype=torch.bool)
    assert infonce_loss(eye, eye, full, 0.05).item() == pytest.approx(math.log(1 + 3 * math.exp(-20)), abs=1e-6)
    swapped = eye[[1, 0, 2, 3]]  # sequences 0 and 1 point at each other's target
    assert infonce_loss(swapped, eye, full, 0.05).item() > 5
    assert infonce_loss(eye, eye, full, 1.0).item() == pytest.approx(math.log(math.e + 3) - 1)
    # positions of the same sequence (the same article) are never negatives: only the other sequence's are
    one_article = torch.eye(4)[None, [1, 0, 2, 3]]  # position 0 predicts position 1's target and vice versa
    assert infonce_loss(one_article, torch.eye(4)[None], torch.ones(1, 4, dtype=torch.bool), 0.05).item() == 0

    ragged = torch.tensor([[True, True, True], [True, False, False]])
    assert last_positions(ragged).tolist() == [[False, False, True], [True, False, False]]
    pred, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    last_only = TrainConfig(positions="last")
    expected = cosine_loss(pred, target, torch.tensor([[False, False, True], [True, False, False]]))
    assert training_loss(pred, target, ragged, last_only).item() == pytest.approx(expected.item())
    combined = TrainConfig(loss="mse", infonce_alpha=0.5, infonce_temperature=0.1)
    expected = mse_loss(pred, target, ragged) + 0.5 * infonce_loss(pred, target, ragged, 0.1)
    assert training_loss(pred, target, ragged, combined).item() == pytest.approx(expected.item())


def test_the_learning_rate_warms_up_linearly_then_decays_by_cosine():
    config = TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    total = 14  # 4 warmup steps, then 10 steps of decay from 1.0 (step 4) to 0.1 (step 13)
    assert [learning_rate(s, config, total) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert learning_rate(4, config, total) == pytest.approx(1.0)
    middle = 4 + 4.5  # half-way through the decay: the mean of the two ends
    assert learning_rate(int(middle), config, total) > 0.55 > learning_rate(int(middle) + 1, config, total)
    assert learning_rate(13, config, total) == pytest.approx(0.1)
    assert learning_rate(99, config, total) == pytest.approx(0.1)
    assert TrainConfig(warmup_steps=0.25).warmup_optimizer_steps(40) == 10
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="l1")
    with pytest.raises(ValueError, match="seed must be >= 0"):  # a run folder <family>-<variant>-seed-1 never compares
        TrainConfig(seed=-1)


def test_a_schedule_over_the_time_budget_warms_up_and_decays_by_whichever_ends_first():
    budget = TrainConfig(lr=1.0, warmup_steps=0.1, min_lr_ratio=0.1, time_budget_s=100, decay_over="time_budget")
    total = 1000  # far more steps than the budget allows: the clock drives the schedule
    assert learning_rate(0, budget, total, elapsed_s=5) == pytest.approx(0.5)  # half of the warmup's 10 s
    assert learning_rate(1, budget, total, elapsed_s=10) == pytest.approx(1.0)
    assert learning_rate(2, budget, total, elapsed_s=55) == pytest.approx(0.55)  # half of the decay: the midpoint
    assert learning_rate(3, budget, total, elapsed_s=100) == pytest.approx(0.1)
    assert learning_rate(4, budget, total, elapsed_s=250) == pytest.approx(0.1)
    steps_first = learning_rate(999, budget, total, elapsed_s=1)  # the steps end before the budget: they rule
    assert steps_first == pytest.approx(learning_rate(999, replace(budget, decay_over="epochs"), total)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="time_budget_s"):
        TrainConfig(decay_over="time_budget")


# ---------------------------------------------------------------- data


def test_batches_are_seeded_cropped_and_split_between_ranks(sequences):
    bank = sequences.bank
    bounds = sequences.article_bounds("train")
    batches = ArticleBatches(bank.vectors, bounds, batch_size=8, max_len=5, seed=3)
    assert len(batches.bounds) == int((np.diff(bounds, axis=1) >= 2).sum())  # one-concept articles skipped
    rows = batches.epoch_rows(0)
    assert np.array_equal(rows, batches.epoch_rows(0)) and not np.array_equal(rows, batches.epoch_rows(1))
    assert np.all(rows[:, 1] - rows[:, 0] <= 6) and np.all(rows[:, 1] - rows[:, 0] >= 2)
    batch = next(batches.epoch(0))
    lengths = rows[:8, 1] - rows[:8, 0]
    assert batch.inputs.shape == (8, lengths.max() - 1, DIM) and batch.mask.sum(1).tolist() == (lengths - 1).tolist()
    start, end = rows[0]
    np.testing.assert_array_equal(batch.inputs[0, :end - start - 1].numpy(), bank.vectors[start:end - 1])
    np.testing.assert_array_equal(batch.targets[0, :end - start - 1].numpy(), bank.vectors[start + 1:end])
    assert batch.target_rows[0, :end - start - 1].tolist() == list(range(start + 1, end))
    assert (batch.target_rows[~batch.mask] == -1).all()
    assert len(list(batches.epoch(0, skip=2))) == len(batches) - 2

    ranks = [ArticleBatches(bank.vectors, bounds, 8, 5, seed=3, rank=r, world_size=3) for r in range(3)]
    shares = [r.epoch_rows(0) for r in ranks]
    assert len({len(s) for s in shares}) == 1 and len({len(r) for r in ranks}) == 1  # same number of batches
    covered = {tuple(map(int, row)) for share in shares for row in share}
    assert covered == {tuple(map(int, row)) for row in rows}  # the ranks share out the same epoch

    bits = bank.column("tmd_bits")
    tmd = bank_tmd_vectors(bits)
    assert np.all(tmd[bits < 0] == 0) and np.allclose(np.linalg.norm(tmd[bits >= 0], axis=1), 1)
    with_tmd = ArticleBatches(bank.vectors, bounds, 8, 5, seed=3, tmd=tmd)
    assert next(with_tmd.epoch(0)).tmd.shape == (*batch.mask.shape, 16)


def test_batches_grouped_by_length_hold_the_same_windows_with_less_padding(sequences):
    bounds = sequences.article_bounds("train")
    plain, grouped = (ArticleBatches(sequences.bank.vectors, bounds, 4, 8, seed=1, group_by_length=g) for g in (False, True))
    rows, grouped_rows = plain.epoch_rows(0), grouped.epoch_rows(0)
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, grouped_rows.tolist()))  # the same crops, reordered
    assert np.array_equal(grouped_rows, grouped.epoch_rows(0)) and not np.array_equal(grouped_rows, grouped.epoch_rows(1))

    def padded_positions(epoch_rows):
        return sum(len(b) * int(np.diff(b, axis=1).max()) for b in np.split(epoch_rows, range(4, len(epoch_rows), 4)))

    assert padded_positions(grouped_rows) < padded_positions(rows)
    assert len(list(grouped.epoch(0))) == len(grouped) == len(plain)


def test_a_curriculum_crops_the_first_epochs_to_short_windows(sequences):
    bounds = sequences.article_bounds("train")
    batches = ArticleBatches(sequences.bank.vectors, bounds, 8, max_len=8, seed=0, curriculum=(2, 2))
    lengths = [np.diff(batches.epoch_rows(epoch), axis=1).max() for epoch in range(4)]
    assert lengths[0] == lengths[1] == 3 and lengths[2] == lengths[3] == 9  # 2 + 1 concepts, then 8 + 1


def test_hard_negatives_are_the_nearest_train_concepts_of_other_articles(sequences):
    bank = sequences.bank
    train_rows = np.concatenate([np.arange(a, b) for a, b in sequences.article_bounds("train")])
    hard = HardNegatives(bank.vectors, bank.bank_article, train_rows, k=3)
    train = np.isin(np.arange(len(bank)), train_rows)
    mined = hard.table[train_rows]
    assert (hard.table[~train] == -1).all() and (mined >= 0).all()  # only train targets; every one found 3
    assert np.isin(mined, train_rows).all()  # never a val or test concept
    assert (bank.bank_article[mined] != bank.bank_article[train_rows][:, None]).all()  # never its own article
    row = int(train_rows[5])  # the three are the nearest other-article train concepts, nearest first
    others = train_rows[bank.bank_article[train_rows] != bank.bank_article[row]]
    cosines = unit_rows(bank.vectors[others]) @ unit_rows(bank.vectors[row][None])[0]
    assert hard.table[row].tolist() == others[np.argsort(-cosines)[:3]].tolist()
    vectors, found = hard.for_targets(torch.tensor([row, row]))
    assert vectors.shape == (2, 3, bank.vectors.shape[1]) and found.all()
    np.testing.assert_allclose(vectors[0, 0].numpy(), bank.vectors[hard.table[row, 0]])


def test_hard_negatives_enter_the_infonce_denominator():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[True, True]])
    negatives = (torch.tensor([[[1.0, 1.0]], [[0.0, -1.0]]]), torch.tensor([[True], [False]]))
    # one sequence: its own other position is not a negative; position 0 gets one hard negative at cos 0.707
    expected = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(math.sqrt(0.5) / 0.5))) / 2
    assert infonce_loss(pred, target, mask, 0.5, negatives).item() == pytest.approx(expected, rel=1e-5)
    assert infonce_loss(pred, target, mask, 0.5).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- training


def test_a_toy_model_learns_the_planted_rule(sequences, tmp_path):
    result = train("tiny_gru_for_tests", sequences, tmp_path / "run", quick(epochs=12), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 12 and all(set(entry) == set(HISTORY_KEYS) for entry in history)
    assert [entry["epoch"] for entry in history] == list(range(1, 13)) and history == result.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert result.stopped_because == "epochs"

    model, sidecar = load_checkpoint(result.best_checkpoint)
    assert sidecar["model_name"] == "tiny_gru_for_tests" and sidecar["dataset_version"] == sequences.version
    val = sequences.windows["val"]
    index = BankIndex(sequences.bank.vectors)
    copy_last = retrieval_ranks(index, CopyLast().predict(sequences.bank.vectors, val), val)["hit_at_5"].mean()
    model_hit5 = retrieval_ranks(index, ModelPredictor(model, "gru").predict(sequences.bank.vectors, val), val)["hit_at_5"]
    assert model_hit5.mean() == pytest.approx(result.best_metrics["hit_at_5"])  # all val windows fit in val_max_queries
    assert model_hit5.mean() > 0.5 > copy_last + 0.3


def test_the_variants_recipes_hard_negatives_and_a_curriculum_train_too(sequences, tmp_path):
    recipe = quick(epochs=6, infonce_alpha=1.0, infonce_temperature=0.1, hard_negatives=4, curriculum_epochs=2,
                   curriculum_max_len=1)
    result = train("tiny_gru_for_tests", sequences, tmp_path / "run", recipe, progress=False)
    losses = [entry["train_loss"] for entry in result.history]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses) and losses[-1] < 0.7 * losses[2]
    assert load_checkpoint(result.best_checkpoint)[1]["train_config"]["hard_negatives"] == 4


def test_checkpoints_reload_exactly_keep_the_best_k_and_refuse_other_data(sequences, tmp_path):
    out = tmp_path / "run"
    result = train("tiny_gru_for_tests", sequences, out, quick(keep_best=2), progress=False)
    per_epoch = sorted(p.name for p in out.glob("epoch*.safetensors"))
    assert len(per_epoch) == 2 and len(list(out.glob("epoch*.json"))) == 2
    assert {p.name for p in out.glob("*.state.pt")} == {"last.state.pt"}  # only `last` resumes
    kept = sorted(result.history, key=lambda e: -e["val_hit_at_5"])[:2]
    best_json = json.loads((out / "best.json").read_text())
    assert best_json["metrics"]["hit_at_5"] == kept[0]["val_hit_at_5"] == result.best_metrics["hit_at_5"]
    assert (out / f"{best_json['checkpoint']}.safetensors").is_file()

    model, sidecar = load_checkpoint(out / "last.safetensors")
    assert not model.training and sidecar["step"] == result.history[-1]["step"]
    assert sidecar["train_config"] == quick(keep_best=2).to_dict() and len(sidecar["history"]) == 4
    state = load_training_state(out / "last")
    assert set(state) >= {"optimizer", "scheduler", "rng", "epoch", "step", "best_hit_at_5"}
    again = build_model(TinyGRUConfig(), DIM)
    again.load_state_dict(weights(out / "last.safetensors"))
    x = torch.randn(3, 5, DIM)
    with torch.no_grad():
        assert torch.equal(model(x), again.eval()(x))

    torch.save({"optimizer": types.SimpleNamespace(evil=True)}, out / "evil.state.pt")  # needs unpickling
    with pytest.raises(PipelineError, match="weights-only"):
        load_training_state(out / "evil")

    check_compatible(sidecar, sequences.bank, sequences)
    other = planted_bank(tmp_path / "other", fingerprint="enc-B")
    with pytest.raises(PipelineError, match="encoder enc-A"):
        check_compatible(sidecar, other)
    with pytest.raises(PipelineError, match="dataset version"):
        check_compatible(sidecar, sequences.bank, build_sequences(sequences.bank, spec=WindowSpec(max_context=4)))
    with pytest.raises(PipelineError, match="already holds a training run"):
        train("tiny_gru_for_tests", sequences, out, quick(), progress=False)


class Crash(Exception):
    pass


def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(sequences, tmp_path):
    config = quick(accumulation_steps=2)
    whole = train("tiny_gru_for_tests", sequences, tmp_path / "whole", config, progress=False)

    def crash_after_epoch_2(entry):
        if entry["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train("tiny_gru_for_tests", sequences, tmp_path / "cut", config, progress=False, on_epoch_end=crash_after_epoch_2)
    resumed = train("tiny_gru_for_tests", sequences, tmp_path / "cut", config, resume=True, progress=False)
    expected, actual = weights(whole.last_checkpoint), weights(resumed.last_checkpoint)
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    same = ("epoch", "step", "train_loss", "val_hit_at_5", "val_cosine")
    assert [[e[k] for k in same] for e in resumed.history] == [[e[k] for k in same] for e in whole.history]
    with pytest.raises(PipelineError, match="lr differ"):  # a resumed run keeps its recipe
        train("tiny_gru_for_tests", sequences, tmp_path / "cut", quick(accumulation_steps=2, lr=0.5), resume=True)


def test_the_time_budget_stops_mid_epoch_leaves_a_checkpoint_and_resumes_exactly(sequences, tmp_path):
    config = quick(epochs=2)
    whole = train("tiny_gru_for_tests", sequences, tmp_path / "whole", config, progress=False)
    out = tmp_path / "budget"
    result = train("tiny_gru_for_tests", sequences, out, quick(epochs=2, time_budget_s=0), progress=False)
    assert result.stopped_because == "time_budget" and result.history[-1]["step"] == 1 and result.history[-1]["partial"]
    load_checkpoint(result.last_checkpoint)
    load_checkpoint(result.best_checkpoint)
    for _ in range(3):  # a step each, then to the end
        result = train("tiny_gru_for_tests", sequences, out, quick(epochs=2, time_budget_s=0), resume=True, progress=False)
    result = train("tiny_gru_for_tests", sequences, out, config, resume=True, progress=False)
    assert result.stopped_because == "epochs" and result.history[-1]["step"] == whole.history[-1]["step"]
    expected, actual = weights(whole.last_checkpoint), weights(result.last_checkpoint)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_early_stopping_stops_when_val_hit_at_5_stops_improving(sequences, tmp_path):
    frozen = quick(epochs=10, lr=0.0, patience=2)  # nothing learns: Hit@5 never beats the first validation
    result = train("tiny_gru_for_tests", sequences, tmp_path / "run", frozen, progress=False)
    assert result.stopped_because == "early_stopping" and len(result.history) == 3
    resumed = train("tiny_gru_for_tests", sequences, tmp_path / "run", frozen, resume=True, progress=False)
    assert resumed.stopped_because == "early_stopping" and len(resumed.history) == 3  # no more epochs


def test_torchrun_trains_with_ddp_on_two_cpu_processes(sequences, tmp_path):
    directory = sequences.bank.directory.parent
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "lvm_pipeline.training", "--bank", str(directory / "bank"), "--sequences", str(directory / "sequences"),
               "--model", "tiny_gru_for_tests", "--plugin", "lvm_pipeline_tests.test_training", "--out", str(out),
               "--epochs", "2", "--batch-size", "8", "--lr", "0.01", "--max-len", "8", "--num-threads", "1",
               "--val-max-queries", "100", "--no-progress"]
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["stopped_because"] == "epochs"
    load_checkpoint(out / "best")
    model, sidecar = load_checkpoint(out / "last")
    assert sidecar["dataset_version"] == sequences.version
    single = ArticleBatches(sequences.bank.vectors, sequences.article_bounds("train"), 8, 8)
    assert sidecar["step"] == 2 * -(-len(single.bounds) // 16)  # each rank half the articles per epoch
    assert len(json.loads((out / "history.json").read_text())) == 2


# ---------------------------------------------------------------- the predictor


@pytest.mark.parametrize("with_tmd", [False, True])
def test_the_predictor_reads_each_query_at_its_last_real_position(sequences, with_tmd):
    torch.manual_seed(0)
    model = build_model(TinyGRUConfig(dropout=0.5, tmd=with_tmd), DIM).train()  # eval mode must switch dropout off
    bank = sequences.bank
    queries = sequences.windows["val"]
    queries = queries.subset(np.arange(min(40, len(queries))))
    assert len(set(queries.context_length.tolist())) > 3
    tmd = bank_tmd_vectors(bank.column("tmd_bits")) if with_tmd else None
    predicted = ModelPredictor(model, "gru", batch_size=16).predict(bank.vectors, queries, tmd)
    model.eval()
    with torch.no_grad():
        for i in range(len(queries)):
            rows = slice(queries.context_start[i], queries.target[i])
            x = torch.from_numpy(np.array(bank.vectors[rows]))[None]
            direct = model(x, torch.from_numpy(tmd[rows])[None]) if with_tmd else model(x)
            np.testing.assert_allclose(predicted[i], direct[0, -1].numpy(), atol=1e-5)
    assert model.training is False
    capped = ModelPredictor(model, "gru", max_context=2).predict(bank.vectors, queries, tmd)
    short = Queries(queries.target, np.maximum(queries.context_start, queries.target - 2), queries.article)
    np.testing.assert_allclose(capped, ModelPredictor(model, "gru").predict(bank.vectors, short, tmd), atol=1e-5)
    one = ModelPredictor(model, "gru").predict_one(bank.vectors[queries.context_start[0]:queries.target[0]],
                                                   None if tmd is None else tmd[queries.context_start[0]:queries.target[0]])
    np.testing.assert_allclose(one, predicted[0], atol=1e-5)


def test_the_registered_toy_gru_trains_and_reloads(sequences, tmp_path):
    result = train("toy_gru", sequences, tmp_path / "run", quick(epochs=2), progress=False)
    model, sidecar = load_checkpoint(result.best_checkpoint)
    assert sidecar["model_config"]["family"] == "gru" and len(result.history) == 2
