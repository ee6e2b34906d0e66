"""The trainer's strategies on the planted bank of test_training: stochastic weight averaging (the mean of the raw
weights, exact resume), input augmentation (inputs only, at the configured rates, seeded; no shuffled position left in
the loss sees its target), progressive training (nested stages, the schedule, exact resume across a stage), and
the variants that switch them on."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.retrieval import BankIndex, retrieval_ranks
from lvm_pipeline.experiments.variants import PREDECESSOR_VARIANTS, VARIANTS
from lvm_pipeline.models.base import registered_configs
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.tmd.schema import bank_tmd_vectors
from lvm_pipeline.training import TrainConfig, load_checkpoint, train
from lvm_pipeline.training.augment import Augmentation
from lvm_pipeline.training.checkpoint import load_training_state
from lvm_pipeline.training.data import ArticleBatches, Batch
from lvm_pipeline.training.validation import loss_is_decreasing
from lvm_pipeline_tests.test_training import planted_bank, quick

TOY = "tiny_gru_for_tests"  # registered by test_training


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: faster on one thread than on two contended cores


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    return build_sequences(planted_bank(tmp_path_factory.mktemp("planted") / "bank"), spec=WindowSpec(max_context=8))


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(path)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def mean_of(runs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts (summed in float64, as exact as float32 allows)."""
    return {k: (sum(w[k].double() for w in runs) / len(runs)).float() for k in runs[0]}


def checkpoint_of(entry: dict) -> str:
    return f"epoch{entry['epoch']:03d}-step{entry['step']:07d}.safetensors"


def val_hit_at_5(model, sequences) -> float:
    val = sequences.windows["val"]  # all of them fit in quick()'s val_max_queries
    predicted = ModelPredictor(model, "check").predict(sequences.bank.vectors, val)
    return float(retrieval_ranks(BankIndex(sequences.bank.vectors), predicted, val)["hit_at_5"].mean())


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Crash(Exception):
    pass


def crash_after(epoch: int):
    def callback(entry):
        if entry["epoch"] == epoch:
            raise Crash
    return callback


# ---------------------------------------------------------------- SWA


def test_swa_validates_and_saves_the_mean_of_the_raw_weights_past_its_start(sequences, tmp_path):
    raw_run = train(TOY, sequences, tmp_path / "raw", quick(keep_best=4), progress=False)
    swa_run = train(TOY, sequences, tmp_path / "swa", quick(keep_best=4, swa_start=0.5), progress=False)
    assert [(e["averaged"], e["averaged_over"]) for e in raw_run.history] == [(False, 0)] * 4
    assert "swa" not in load_training_state(tmp_path / "raw" / "last")  # off: the resume state is what it was
    # validations at 1/4, 2/4, 3/4 and 4/4 of the steps: the last two are past 0.5
    assert [(e["averaged"], e["averaged_over"]) for e in swa_run.history] == [(False, 0), (False, 0), (True, 1), (True, 2)]

    raw = [weights(tmp_path / "raw" / checkpoint_of(e)) for e in raw_run.history]  # keep_best 4 keeps them all
    for entry in swa_run.history:
        epoch, n = entry["epoch"], entry["averaged_over"]
        expected = mean_of(raw[epoch - n:epoch]) if n else raw[epoch - 1]
        assert same_weights(weights(tmp_path / "swa" / checkpoint_of(entry)), expected)
    mean = mean_of(raw[2:])
    assert same_weights(weights(swa_run.last_checkpoint), mean) and not same_weights(mean, raw[-1])
    best = json.loads((tmp_path / "swa" / "best.json").read_text())
    assert same_weights(weights(swa_run.best_checkpoint), weights(tmp_path / "swa" / f"{best['checkpoint']}.safetensors"))

    model, _ = load_checkpoint(swa_run.last_checkpoint)  # what was validated is the mean
    assert val_hit_at_5(model, sequences) == pytest.approx(swa_run.history[-1]["val_hit_at_5"])
    state = load_training_state(tmp_path / "swa" / "last")  # training went on from the raw weights, unchanged
    assert state["swa"]["count"] == 2 and same_weights(state["swa"]["weights"], raw[-1])
    assert [e["train_loss"] for e in swa_run.history] == [e["train_loss"] for e in raw_run.history]


def test_a_resumed_swa_run_ends_with_the_weights_of_the_uninterrupted_one(sequences, tmp_path):
    config = quick(swa_start=0.4)  # averaged from epoch 2 on: the crash after epoch 3 leaves a mean of two
    whole = train(TOY, sequences, tmp_path / "whole", config, progress=False)
    with pytest.raises(Crash):
        train(TOY, sequences, tmp_path / "cut", config, progress=False, on_epoch_end=crash_after(3))
    resumed = train(TOY, sequences, tmp_path / "cut", config, resume=True, progress=False)
    assert same_weights(weights(whole.last_checkpoint), weights(resumed.last_checkpoint))
    assert same_weights(weights(whole.best_checkpoint), weights(resumed.best_checkpoint))
    same = ("epoch", "step", "train_loss", "val_hit_at_5", "averaged_over")
    assert [[e[k] for k in same] for e in resumed.history] == [[e[k] for k in same] for e in whole.history]
    assert resumed.history[-1]["averaged_over"] == 3


def test_a_run_of_an_older_sidecar_resumes_with_the_new_options_off(sequences, tmp_path):
    out = tmp_path / "run"
    train(TOY, sequences, out, quick(epochs=1), progress=False)
    sidecar = json.loads((out / "last.json").read_text())
    new = {"swa_start", "context_dropout", "input_noise", "shuffle_window", "progressive_articles", "progressive_epochs"}
    sidecar["train_config"] = {k: v for k, v in sidecar["train_config"].items() if k not in new}
    (out / "last.json").write_text(json.dumps(sidecar))
    assert len(train(TOY, sequences, out, quick(epochs=2), resume=True, progress=False).history) == 2
    with pytest.raises(PipelineError, match="swa_start differ"):
        train(TOY, sequences, out, quick(epochs=3, swa_start=0.5), resume=True, progress=False)


# ---------------------------------------------------------------- augmentation


def plain_batches(sequences) -> ArticleBatches:
    bank = sequences.bank
    views = np.random.default_rng(7).normal(size=bank.vectors.shape).astype(np.float32)
    return ArticleBatches(bank.vectors, sequences.article_bounds("train"), 16, 8, seed=0,
                          tmd=bank_tmd_vectors(bank.column("tmd_bits")), views=views)


def test_dropout_and_noise_change_only_the_inputs_at_the_configured_rates(sequences):
    batches = plain_batches(sequences)
    dropout, noise = Augmentation(context_dropout=0.3, seed=1), Augmentation(input_noise=0.5, seed=1)
    zeroed, noise_vectors = [], []
    for epoch in range(4):
        for index, batch in enumerate(batches.epoch(epoch)):
            dropped, noised = dropout(batch, epoch, index), noise(batch, epoch, index)
            for augmented in (dropped, noised):
                for name in ("targets", "mask", "tmd", "view", "target_rows"):
                    assert torch.equal(getattr(augmented, name), getattr(batch, name)), name
                assert torch.equal(augmented.inputs[~batch.mask], batch.inputs[~batch.mask])  # outside the loss: as is
            real = batch.mask
            is_zero = (dropped.inputs[real] == 0).all(dim=1)
            assert torch.equal(dropped.inputs[real][~is_zero], batch.inputs[real][~is_zero])  # the rest untouched
            zeroed.append(is_zero)
            noise_vectors.append((noised.inputs - batch.inputs)[real])
    zeroed = torch.cat(zeroed)
    assert len(zeroed) > 2500 and abs(zeroed.float().mean().item() - 0.3) < 0.04
    noise_vectors = torch.cat(noise_vectors)
    dim = noise_vectors.shape[1]
    assert noise_vectors.norm(dim=1).mean().item() == pytest.approx(0.5, rel=0.04)  # the expected L2 norm
    assert (noise_vectors ** 2).sum(dim=1).mean().item() == pytest.approx(0.25, rel=0.05)  # std 0.5 / sqrt(D)
    assert noise_vectors.std().item() == pytest.approx(0.5 / dim ** 0.5, rel=0.05)
    assert abs(noise_vectors.mean().item()) < 0.01


def test_the_same_seed_epoch_and_batch_draw_the_same_augmentation(sequences):
    augment = Augmentation(context_dropout=0.2, input_noise=0.3, shuffle_window=3, seed=5)
    first = [augment(b, 1, i) for i, b in enumerate(plain_batches(sequences).epoch(1))]
    again = [replace(augment)(b, 1, i) for i, b in enumerate(plain_batches(sequences).epoch(1))]
    for a, b in zip(first, again, strict=True):
        assert all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(Batch))
    batch = next(plain_batches(sequences).epoch(1))
    others = [augment(batch, 2, 0), augment(batch, 1, 1), replace(augment, seed=6)(batch, 1, 0),
              replace(augment, rank=1)(batch, 1, 0)]
    assert all(not torch.equal(other.inputs, first[0].inputs) for other in others)
    assert Augmentation.from_config(TrainConfig()) is None  # off by default: batches as they were
    assert Augmentation.from_config(TrainConfig(shuffle_window=2, positions="last")).mask_leaks is False


def coded_batch(lengths: np.ndarray) -> Batch:
    """Inputs (and TMD, views) whose every component is the position's index + 1 (0 at padding); targets index + 2."""
    width = int(lengths.max())
    mask = torch.from_numpy(np.arange(width)[None, :] < lengths[:, None])
    code = torch.where(mask, torch.arange(width) + 1.0, 0.0)[..., None]
    rows = torch.where(mask, torch.arange(width) + 1, -1)
    return Batch(code.expand(-1, -1, 4).clone(), (code + 1).expand(-1, -1, 4) * mask[..., None], mask,
                 code.expand(-1, -1, 16).clone(), rows, code.expand(-1, -1, 4).clone())


def test_no_shuffled_position_left_in_the_loss_sees_its_target_or_later():
    rng = np.random.default_rng(0)
    left, shuffled_and_left, masked = 0, 0, 0
    for window in (2, 3, 5):
        augment = Augmentation(shuffle_window=window, seed=window)
        for index in range(40):
            lengths = rng.integers(1, 20, size=8)
            batch = coded_batch(lengths)
            out = augment(batch, 0, index)
            assert torch.equal(out.targets, batch.targets) and torch.equal(out.view, batch.view)
            assert torch.equal(out.tmd[..., 0], out.inputs[..., 0])  # each TMD code moves with its vector
            assert torch.equal(out.target_rows, batch.target_rows.masked_fill(~out.mask, -1))
            original = out.inputs[..., 0].long() - 1  # the position each input came from (-1: padding)
            for b, length in enumerate(lengths.tolist()):
                seen = original[b, :length].tolist()
                assert sorted(seen) == list(range(length)) and (original[b, length:] == -1).all()
                assert all(o // window == t // window for t, o in enumerate(seen))  # within its window
                assert not out.mask[b, length:].any()
                for t in range(length):
                    visible = seen[:t + 1]
                    if out.mask[b, t]:  # left in the loss: it sees exactly x_0..x_t, never x_{t+1} or later
                        assert sorted(visible) == list(range(t + 1))
                        left += 1
                        shuffled_and_left += visible != list(range(t + 1))
                    else:  # masked only where it would see ahead
                        assert max(visible) > t
                        masked += 1
                assert out.mask[b, length - 1]  # the last position never sees ahead
    assert min(left, shuffled_and_left, masked) > 100
    unmasked = Augmentation(shuffle_window=3, mask_leaks=False)(coded_batch(np.array([7, 4])), 0, 0)
    assert torch.equal(unmasked.mask, coded_batch(np.array([7, 4])).mask)  # positions="last": a mask without holes


def test_a_run_with_augmented_inputs_still_learns_the_planted_rule(sequences, tmp_path):
    chance = 5 / len(sequences.bank)
    noisy = train(TOY, sequences, tmp_path / "noisy", quick(epochs=12, context_dropout=0.1, input_noise=0.1),
                  progress=False)
    shuffled = train(TOY, sequences, tmp_path / "shuffled", quick(epochs=12, shuffle_window=3), progress=False)
    assert noisy.best_metrics["hit_at_5"] > 0.5 and shuffled.best_metrics["hit_at_5"] > 25 * chance
    model, _ = load_checkpoint(noisy.best_checkpoint)  # validation read the inputs as they are
    assert val_hit_at_5(model, sequences) == pytest.approx(noisy.best_metrics["hit_at_5"])


def test_an_augmented_run_cut_mid_epoch_resumes_exactly(sequences, tmp_path):
    config = quick(epochs=2, context_dropout=0.2, input_noise=0.2, shuffle_window=3)
    whole = train(TOY, sequences, tmp_path / "whole", config, progress=False)
    out = tmp_path / "cut"
    for _ in range(3):  # one optimizer step a call: each resumes mid-epoch at the next batch
        train(TOY, sequences, out, replace(config, time_budget_s=0), resume=(out / "last.json").exists(),
              progress=False)
    result = train(TOY, sequences, out, config, resume=True, progress=False)
    assert result.history[-1]["step"] == whole.history[-1]["step"]
    assert same_weights(weights(whole.last_checkpoint), weights(result.last_checkpoint))


# ---------------------------------------------------------------- progressive training


def test_progressive_stages_are_nested_seeded_subsets_then_all(sequences):
    bounds = sequences.article_bounds("train")
    batches = ArticleBatches(sequences.bank.vectors, bounds, 8, 8, seed=0, progressive=((20, 50, 10_000), 2))
    every = {tuple(b) for b in batches.bounds.tolist()}
    sets = [{tuple(b) for b in batches.epoch_bounds(epoch).tolist()} for epoch in range(7)]
    assert [len(s) for s in sets] == [20, 20, 50, 50, len(every), len(every), len(every)]  # 10,000 > all: skipped
    assert sets[0] == sets[1] < sets[2] == sets[3] < sets[4] == every
    assert sets[0] != {tuple(b) for b in batches.bounds[:20].tolist()}  # a seeded subset, not the first articles
    for epoch in range(7):
        rows = batches.epoch_rows(epoch)
        owner = [next(a for a in sets[epoch] if a[0] <= start < end <= a[1]) for start, end in rows.tolist()]
        assert sorted(owner) == sorted(sets[epoch])  # every article of the stage, once, cropped within itself
        assert batches.batches_in(epoch) == ceil_div(len(sets[epoch]), 8) == len(list(batches.epoch(epoch)))
    assert len(batches) == batches.batches_in(6)
    reseeded = ArticleBatches(sequences.bank.vectors, bounds, 8, 8, seed=1, progressive=((20,), 1))
    assert {tuple(b) for b in reseeded.epoch_bounds(0).tolist()} != sets[0]
    plain = ArticleBatches(sequences.bank.vectors, bounds, 8, 8, seed=0)
    assert np.array_equal(plain.epoch_rows(4), batches.epoch_rows(4))  # past the stages: the same epoch as without


def test_the_schedule_of_a_progressive_run_counts_each_epochs_batches(sequences, tmp_path):
    config = quick(epochs=5, progressive_articles=[20, 50], progressive_epochs=2, accumulation_steps=2, min_lr_ratio=0.1)
    result = train(TOY, sequences, tmp_path / "run", config, progress=False)
    n_train = len(ArticleBatches(sequences.bank.vectors, sequences.article_bounds("train"), 16, 8).bounds)
    assert [e["articles"] for e in result.history] == [20, 20, 50, 50, n_train]
    steps = [ceil_div(ceil_div(n, 16), 2) for n in (20, 20, 50, 50, n_train)]  # batches of 16, steps of 2 batches
    assert [e["step"] for e in result.history] == np.cumsum(steps).tolist()
    assert load_training_state(tmp_path / "run" / "last")["scheduler"]["total_steps"] == sum(steps)
    assert result.history[-1]["lr"] == pytest.approx(config.lr * 0.1)  # the decay ends on the run's last step


def test_a_progressive_run_resumed_mid_epoch_across_a_stage_boundary_ends_exactly(sequences, tmp_path):
    config = quick(epochs=3, batch_size=8, progressive_articles=[20], progressive_epochs=1)
    whole = train(TOY, sequences, tmp_path / "whole", config, progress=False)
    out = tmp_path / "cut"
    for _ in range(5):  # stage 0 has 3 batches (3 steps): 5 one-step calls end 2 batches into the first epoch on all
        train(TOY, sequences, out, replace(config, time_budget_s=0), resume=(out / "last.json").exists(),
              progress=False)
    cut = json.loads((out / "history.json").read_text())
    assert [(e["epoch"], e["articles"], e["partial"]) for e in cut][2:] == [(1, 20, False), (2, 111, True), (2, 111, True)]
    result = train(TOY, sequences, out, config, resume=True, progress=False)
    assert result.history[-1]["step"] == whole.history[-1]["step"] == 3 + 2 * 14
    assert same_weights(weights(whole.last_checkpoint), weights(result.last_checkpoint))


# ---------------------------------------------------------------- options and variants


@pytest.mark.parametrize("bad", [{"swa_start": 1.0}, {"swa_start": -0.1}, {"context_dropout": 1.0}, {"input_noise": -1.0},
                                 {"shuffle_window": 1}, {"shuffle_window": -2}, {"progressive_articles": [50, 20]},
                                 {"progressive_articles": [0, 20]}, {"progressive_epochs": 0}])
def test_the_strategy_options_are_validated(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_each_strategy_variant_changes_exactly_its_fields():
    base, recipe = registered_configs()["gru_small"](), TrainConfig(infonce_alpha=1.0, hard_negatives=8)
    expected = {"swa": {"swa_start": 0.5}, "augment": {"context_dropout": 0.1, "input_noise": 0.1},
                "shuffle": {"shuffle_window": 3},
                "progressive": {"progressive_articles": [1000, 5000, 10000], "progressive_epochs": 2},
                "mse": {"loss": "mse", "infonce_alpha": 0.0, "hard_negatives": 0}}
    assert list(VARIANTS)[:5] == list(PREDECESSOR_VARIANTS) and set(VARIANTS) == set(PREDECESSOR_VARIANTS) | set(expected)
    for name, changes in expected.items():
        model, train_config = VARIANTS[name].apply(base, recipe)
        assert model == base and VARIANTS[name].title and VARIANTS[name].description
        changed = {k: v for k, v in train_config.to_dict().items() if recipe.to_dict()[k] != v}
        assert changed == changes, name


def test_the_loss_check_says_when_one_epoch_leaves_nothing_to_compare(tmp_path):
    """A run its time budget cut in the first epoch has one loss: finite passes, but the check must not say it fell."""
    def verdict(losses):
        (tmp_path / "history.json").write_text(json.dumps([{"train_loss": loss} for loss in losses]))
        return loss_is_decreasing(tmp_path)

    one = verdict([2.5])
    assert one.passed and "one epoch only" in one.summary and "fell" not in one.summary
    assert verdict([2.5, 2.0]).passed and "fell" in verdict([2.5, 2.0]).summary
    assert not verdict([2.0, 2.5]).passed
    assert not verdict([float("nan")]).passed
