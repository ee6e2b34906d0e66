"""The trainer (DESIGN.md section 8): AdamW, linear warmup then cosine decay, gradient clipping and accumulation,
bf16 autocast on CUDA, validation on full-bank Hit@K after every epoch, early stopping on val Hit@5, a wall-clock
budget, a checkpoint every epoch keeping the best K, exact resume, and DDP under torchrun. Options: progressive
training (the first epochs on nested subsets of the articles, `data.py`), augmented inputs (`augment.py`), and
stochastic weight averaging (SWA): past `swa_start` of the run, each validation adds the weights to an
equal-weight running mean, and the mean is what is validated and saved, while training goes on from the raw weights.

Files in `out_dir` (see `lvm_pipeline.training.checkpoint` for a checkpoint's files):
- `epochNNN-stepNNNNNNN.*`: the checkpoint of each validation, the best `keep_best` by val Hit@5 kept;
- `best.*`: a copy of the best one so far; `last.*` (+ `last.state.pt`): the latest, to resume from;
- `history.json`: one entry per validation (HISTORY_KEYS).

Determinism: the batches of an epoch depend only on (seed, epoch); the resume state holds the optimizer, the
step counters and the torch/numpy/python RNG states (and with SWA the raw weights and the mean's float64 sum and
count), so on CPU an interrupted run resumed from `last` ends with the same weights as the uninterrupted run (a run
cut by the time budget resumes mid-epoch; its extra validation joins the SWA mean as every validation does).
Under torchrun (WORLD_SIZE > 1) every rank trains its share of each epoch's articles through
DistributedDataParallel; rank 0 validates and writes the files while the others wait.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from lvm_pipeline.arrays import unit_rows
from lvm_pipeline.datasets.sequences import TrainingSequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.retrieval import BankIndex, retrieval_ranks
from lvm_pipeline.files import atomic_write
from lvm_pipeline.models.base import ModelConfig, NextConceptModel, build_model
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.progress import progress as progress_bar
from lvm_pipeline.tmd.schema import bank_tmd_vectors
from lvm_pipeline.training.augment import Augmentation
from lvm_pipeline.training.checkpoint import (
    check_compatible,
    checkpoint_files,
    delete_checkpoint,
    load_training_state,
    read_sidecar,
    save_checkpoint,
)
from lvm_pipeline.training.config import RESUMABLE_CHANGES, TrainConfig
from lvm_pipeline.training.data import ArticleBatches
from lvm_pipeline.training.losses import training_loss
from lvm_pipeline.training.negatives import HardNegatives

log = logging.getLogger(__name__)

KS = (1, 5, 10)
HISTORY_FILE = "history.json"
# a history entry: epoch (1-based, the one validated), step (optimizer steps so far), partial (the time budget cut the
# epoch), articles (the epoch's train articles: fewer in a progressive stage), train_loss (mean over its batches),
# val_cosine and val_hit_at_1/5/10 (full bank), averaged (what was validated and saved is the SWA mean),
# averaged_over (the validations in that mean; 0 without), lr (of the last step), seconds (training + validation
# + checkpoints), train_seconds (training only)
HISTORY_KEYS = ("epoch", "step", "partial", "articles", "train_loss", "val_cosine", "val_hit_at_1", "val_hit_at_5",
                "val_hit_at_10", "averaged", "averaged_over", "lr", "seconds", "train_seconds")
PROGRESS_EVERY = 10  # optimizer steps between progress-bar loss updates (each one waits for the device)


@dataclass
class TrainResult:
    best_checkpoint: Path  # weights of the best checkpoint (best.safetensors; best.json beside it)
    last_checkpoint: Path  # weights of the latest checkpoint (resume from it)
    history: list[dict]  # one entry per validation (rank 0's; empty on other ranks)
    stopped_because: str  # "epochs", "early_stopping" or "time_budget"
    best_metrics: dict  # val metrics of the best checkpoint (rank 0)


def learning_rate(step: int, config: TrainConfig, total_steps: int, elapsed_s: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warmup to config.lr, then cosine decay to
    config.lr * min_lr_ratio at the last step. With decay_over="time_budget" the warmup and the decay end at whichever
    comes first, the last step or the end of the time budget (`elapsed_s` of it spent)."""
    warmup = config.warmup_optimizer_steps(total_steps)
    ramp = (step + 1) / warmup if step < warmup else 1.0
    progress = (step - warmup) / max(total_steps - warmup - 1, 1)
    if config.decay_over == "time_budget":
        spent = elapsed_s / config.time_budget_s
        warmup_share = config.warmup_steps if config.warmup_steps < 1 else 0.0
        if warmup_share:
            ramp = max(ramp, spent / warmup_share)
        progress = max(progress, (spent - warmup_share) / (1 - warmup_share))
    ramp, progress = min(ramp, 1.0), min(max(progress, 0.0), 1.0)
    return config.lr * ramp * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model_config: ModelConfig | str, sequences: TrainingSequences, out_dir: Path, config: TrainConfig,
          model_name: str | None = None, resume: bool = False, progress: bool = True,
          on_epoch_end=None, views: np.ndarray | None = None) -> TrainResult:
    """Train a model (a config or a registered config's name) on `sequences`' train articles, validating on its
    val windows; `on_epoch_end(history_entry)` is called on rank 0 after each validation's checkpoint. `views`: the
    bank's context views (`context_text.context_views`), for a model with the text view."""
    started = time.monotonic()
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    world = _Distributed.start(config.device)
    try:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if world.device.type == "cpu":  # bit-exact resume is promised on CPU; on CUDA it would only warn
            torch.use_deterministic_algorithms(True, warn_only=True)
        name = model_name or (model_config if isinstance(model_config, str) else model_config.family)
        run = _Run(model_config, name, sequences, Path(out_dir), config, world, resume, progress, on_epoch_end, views)
        return run.train(started)
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
        world.stop()


@dataclass
class _Distributed:
    """This process's place in a torchrun launch (world_size 1 without one) and its device."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this call initialised the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device_choice: str) -> _Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        device = torch.device("cuda" if device_choice == "auto" and torch.cuda.is_available() else
                              "cpu" if device_choice == "auto" else device_choice)
        if world_size <= 1:
            return cls(0, 1, device, False)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device, owns)

    def stop(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def sum(self, *values: float) -> list[float]:
        """Element-wise sum over the ranks."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def from_main(self, value: int) -> int:
        """Rank 0's value on every rank (also the barrier after rank 0's validation and files)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, 0)
        return int(tensor.item())

    def gather(self, value) -> list:
        if self.world_size == 1:
            return [value]
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


class _Validator:
    """Full-bank Hit@1/5/10 and mean cosine on a seeded subset of the val windows (the index is built once)."""

    def __init__(self, sequences: TrainingSequences, config: TrainConfig, tmd: np.ndarray | None,
                 views: np.ndarray | None):
        queries = sequences.windows["val"]
        if not len(queries):
            raise PipelineError("the val split has no windows to validate on: the bank is too small to train on")
        if config.val_max_queries is not None and len(queries) > config.val_max_queries:
            chosen = np.random.default_rng(config.seed).choice(len(queries), config.val_max_queries, replace=False)
            queries = queries.subset(np.sort(chosen))
        self.queries, self.vectors, self.tmd, self.batch_size = queries, sequences.bank.vectors, tmd, config.val_batch_size
        self.views = views
        self.index = BankIndex(self.vectors)
        self.unit_targets = unit_rows(self.vectors[queries.target], dtype=np.float32)

    def __call__(self, model: NextConceptModel, device: torch.device) -> dict[str, float]:
        predicted = ModelPredictor(model, "validation", self.batch_size, device, views=self.views).predict(
            self.vectors, self.queries, self.tmd)
        hits = retrieval_ranks(self.index, predicted, self.queries, KS)
        cosine = np.einsum("nd,nd->n", unit_rows(predicted, dtype=np.float32), self.unit_targets).mean()
        return {f"hit_at_{k}": float(hits[f"hit_at_{k}"].mean()) for k in KS} | {"cosine": float(cosine)}


class _Run:
    """One call of `train`: the model, optimizer, data and counters, and the loop over epochs."""

    def __init__(self, model_config, name: str, sequences: TrainingSequences, out_dir: Path, config: TrainConfig,
                 world: _Distributed, resume: bool, progress: bool, on_epoch_end, views: np.ndarray | None = None):
        self.name, self.sequences, self.out_dir, self.config, self.world = name, sequences, out_dir, config, world
        last = checkpoint_files(out_dir, "last")
        resuming = resume and last[".state.pt"].is_file()
        if not resuming and last[".json"].is_file():
            raise PipelineError(f"{out_dir} already holds a training run: resume it (resume=True, --resume) or "
                                "train into another directory")
        self.progress, self.on_epoch_end = progress, on_epoch_end
        bank = sequences.bank
        _seed_everything(config.seed)
        self.model = build_model(model_config, bank.vectors.shape[1]).to(world.device)
        _seed_everything(config.seed + world.rank)  # dropout differs between ranks
        self.tmd = bank_tmd_vectors(bank.column("tmd_bits")) if self.model.config.tmd else None
        self.views = views if self.model.config.text_view else None
        if self.model.config.text_view and views is None:
            raise PipelineError(f"{name} reads the text view: train it with the bank's context views")
        self.data = ArticleBatches(bank.vectors, sequences.article_bounds("train"), config.batch_size, config.max_len,
                                   config.seed, self.tmd, world.rank, world.world_size, config.group_by_length,
                                   (config.curriculum_epochs, config.curriculum_max_len), self.views,
                                   (config.progressive_articles, config.progressive_epochs))
        self.augment = Augmentation.from_config(config, world.rank)
        self.hard_negatives = None
        if config.hard_negatives:
            train_rows = np.concatenate([np.arange(a, b) for a, b in sequences.article_bounds("train")])
            self.hard_negatives = HardNegatives(bank.vectors, bank.bank_article, train_rows, config.hard_negatives)
        self.total_steps = sum(self._steps_in(epoch) for epoch in range(config.epochs))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.validate = _Validator(sequences, config, self.tmd, self.views) if world.is_main else None
        self.epoch = self.batch_in_epoch = self.step = self.stale = 0  # stale: validations without a better Hit@5
        self.best_hit_at_5 = -math.inf
        self.kept: list[dict] = []  # per-epoch checkpoints kept: name, hit_at_5, cosine
        self.average = _WeightAverage()  # SWA
        self.history: list[dict] = []
        if resuming:
            self._resume()
        else:
            self.model.fit_train_vectors(self.data.train_vectors())
        self.trained = self.model
        if world.world_size > 1:
            device_ids = [world.device] if world.device.type == "cuda" else None
            self.trained = DistributedDataParallel(self.model, device_ids=device_ids)

    def _steps_in(self, epoch: int) -> int:
        """Optimizer steps of `epoch` (its batches, a progressive stage's fewer, over accumulation_steps)."""
        return -(-self.data.batches_in(epoch) // self.config.accumulation_steps)

    def train(self, started: float) -> TrainResult:
        config, world = self.config, self.world
        stopped = None
        while stopped is None:
            if self.epoch >= config.epochs:
                stopped = "epochs"
            elif config.patience is not None and self.stale >= config.patience:
                stopped = "early_stopping"
            else:
                epoch_started = time.monotonic()
                timed_out, train_loss = self._train_epoch(started)
                train_seconds = time.monotonic() - epoch_started
                partial = self.batch_in_epoch < self.data.batches_in(self.epoch)
                if not partial:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                rng = world.gather(_rng_state())
                if world.is_main:
                    with self._validated_weights(time.monotonic() - started) as raw:
                        self._validate_and_save(train_loss, partial, rng, epoch_started, train_seconds, raw)
                    if self.on_epoch_end is not None:
                        self.on_epoch_end(self.history[-1])
                stale = world.from_main(self.stale)  # rank 0 decides; the broadcast is also the barrier
                self.stale = stale
                stopped = "time_budget" if timed_out else None
        log.info("%s: stopped (%s) after epoch %d, step %d", self.name, stopped, self.epoch, self.step)
        best = checkpoint_files(self.out_dir, "best")
        best_metrics = read_sidecar(best[".json"])["metrics"] if world.is_main and best[".json"].is_file() else {}
        return TrainResult(best[".safetensors"], checkpoint_files(self.out_dir, "last")[".safetensors"], self.history,
                           stopped, best_metrics)

    def _train_epoch(self, started: float) -> tuple[bool, float]:
        """Train on this epoch's batches from self.batch_in_epoch on; (stopped by the time budget, mean loss)."""
        config, world = self.config, self.world
        accumulation, n_batches = config.accumulation_steps, self.data.batches_in(self.epoch)
        bf16 = config.bf16 and world.device.type == "cuda"
        loss_sum, n_losses, timed_out = torch.zeros((), device=world.device), 0, False
        self.trained.train()
        bar = progress_bar(n_batches, f"{self.name} epoch {self.epoch + 1}/{config.epochs}", "batch", self.batch_in_epoch,
                           disable=not (self.progress and world.is_main), leave=False)
        for batch in self.data.epoch(self.epoch, skip=self.batch_in_epoch):
            batch = batch.to(world.device)
            index = self.batch_in_epoch
            if self.augment is not None:
                batch = self.augment(batch, self.epoch, index)
            group_start = index - index % accumulation
            group_size = min(accumulation, n_batches - group_start)
            steps_now = index + 1 == group_start + group_size
            sync = nullcontext() if steps_now or world.world_size == 1 else self.trained.no_sync()
            with sync:
                with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext():
                    targets = {"target": batch.targets} if self.model.trains_on_targets else {}
                    predicted = self.trained(batch.inputs, **batch.side_inputs, **targets)
                    negatives_for = None if self.hard_negatives is None else (
                        lambda mask, rows=batch.target_rows: self.hard_negatives.for_targets(rows[mask]))
                    loss = training_loss(predicted, batch.targets, batch.mask, config, negatives_for,
                                         self.model.loss_space)
                    if (auxiliary := self.model.auxiliary_loss()) is not None:
                        loss = loss + auxiliary
                (loss / group_size).backward()
            loss_sum += loss.detach()
            n_losses += 1
            self.batch_in_epoch += 1
            bar.update()
            if steps_now:
                elapsed = 0.0
                if config.time_budget_s is not None:  # the ranks' mean clock: every rank steps and stops alike
                    elapsed = world.sum(time.monotonic() - started)[0] / world.world_size
                self._optimizer_step(elapsed)
                if self.progress and self.step % PROGRESS_EVERY == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if config.time_budget_s is not None and elapsed > config.time_budget_s:
                    timed_out = True
                    break
        bar.close()
        total, count = world.sum(loss_sum.item(), n_losses)
        return timed_out, total / max(count, 1)

    def _optimizer_step(self, elapsed_s: float) -> None:
        lr = learning_rate(self.step, self.config, self.total_steps, elapsed_s)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _run_share(self, elapsed_s: float) -> float:
        """How far the run is: its share of the schedule's optimizer steps, or of the time budget when it has one,
        whichever is further."""
        share = self.step / max(self.total_steps, 1)
        if self.config.time_budget_s is not None:
            share = max(share, elapsed_s / self.config.time_budget_s if self.config.time_budget_s > 0 else 1.0)
        return share

    @contextmanager
    def _validated_weights(self, elapsed_s: float) -> Iterator[dict[str, torch.Tensor] | None]:
        """Inside the block the model holds the weights to validate and save: with SWA past swa_start (or once
        begun) the weights join the mean and the model holds the mean, the block getting the raw weights (training
        goes on from them after it); otherwise its own weights, and None."""
        swa_start = self.config.swa_start
        if not (swa_start > 0 and (self.average.count > 0 or self._run_share(elapsed_s) > swa_start)):
            yield None
            return
        self.average.add(self.model.state_dict())
        with _holding(self.model, self.average.mean(self.model.state_dict())) as raw:
            yield raw

    def _validate_and_save(self, train_loss: float, partial: bool, rng: list[dict], epoch_started: float,
                           train_seconds: float, raw: dict[str, torch.Tensor] | None) -> None:
        """Rank 0: validate, checkpoint (keeping the best K: Hit@5, then cosine, then the earliest), update `best`
        (the first of those), `last` and history.json. Early stopping counts validations without a better Hit@5.
        `raw`: the weights training goes on from, when the model holds the SWA mean."""
        metrics = self.validate(self.model, self.world.device)
        improved = metrics["hit_at_5"] > self.best_hit_at_5
        self.best_hit_at_5 = max(self.best_hit_at_5, metrics["hit_at_5"])
        self.stale = 0 if improved else self.stale + 1
        epoch_number = self.epoch + 1 if partial else self.epoch
        entry = {"epoch": epoch_number, "step": self.step, "partial": partial,
                 "articles": len(self.data.epoch_bounds(epoch_number - 1)), "train_loss": train_loss,
                 "val_cosine": metrics["cosine"], **{f"val_hit_at_{k}": metrics[f"hit_at_{k}"] for k in KS},
                 "averaged": raw is not None, "averaged_over": self.average.count,
                 "lr": self.optimizer.param_groups[0]["lr"], "train_seconds": train_seconds,
                 "seconds": time.monotonic() - epoch_started}
        self.history.append(entry)
        name = f"epoch{epoch_number:03d}-step{self.step:07d}"
        sidecar = self._sidecar(metrics | {"train_loss": train_loss}, epoch_number)
        ranked = _best_first(self.kept + [{"name": name, "hit_at_5": metrics["hit_at_5"], "cosine": metrics["cosine"]}])
        self.kept = ranked[:self.config.keep_best]
        if any(kept["name"] == name for kept in self.kept):
            save_checkpoint(self.out_dir, self.model, sidecar, name=name)
        for dropped in ranked[self.config.keep_best:]:
            delete_checkpoint(self.out_dir, dropped["name"])
        if ranked[0]["name"] == name:
            save_checkpoint(self.out_dir, self.model, sidecar | {"checkpoint": name}, name="best")
        save_checkpoint(self.out_dir, self.model, sidecar, self._training_state(rng, raw), name="last")
        text = json.dumps(self.history, indent=2)
        atomic_write(self.out_dir / HISTORY_FILE, lambda f: f.write(text.encode()))

    def _sidecar(self, metrics: dict, epoch_number: int) -> dict:
        bank = self.sequences.bank
        return {"model_name": self.name, "model_config": self.model.config.to_dict(), "d_input": self.model.d_input,
                "encoder_fingerprint": bank.manifest.get("encoder_fingerprint"), "bank_version": bank.version,
                "dataset_version": self.sequences.version, "bank_size": len(bank), "epoch": epoch_number,
                "step": self.step, "metrics": metrics, "val_queries": len(self.validate.queries),
                "train_config": self.config.to_dict(), "history": self.history, "torch_version": torch.__version__}

    def _training_state(self, rng: list[dict], raw: dict[str, torch.Tensor] | None = None) -> dict:
        """What resuming needs besides the saved weights; `raw`: the weights training goes on from, when the saved
        ones are the SWA mean (then saved with the mean's sum and count)."""
        state = {"optimizer": self.optimizer.state_dict(),
                 "scheduler": {"step": self.step, "total_steps": self.total_steps},
                 "rng": rng, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                 "best_hit_at_5": self.best_hit_at_5, "stale": self.stale, "kept": self.kept, "history": self.history,
                 "world_size": self.world.world_size}
        if raw is not None:
            state["swa"] = self.average.state() | {"weights": raw}
        return state

    def _resume(self) -> None:
        """Continue from `last`: weights, optimizer, counters, history and RNG states."""
        last = checkpoint_files(self.out_dir, "last")
        sidecar = read_sidecar(last[".json"])
        check_compatible(sidecar, self.sequences.bank, self.sequences)
        if sidecar["model_config"] != self.model.config.to_dict():
            raise PipelineError(f"cannot resume {self.out_dir}: it trained another model config ({sidecar['model_config']})")
        saved = TrainConfig.from_dict(sidecar["train_config"]).to_dict()  # fields newer than the run: their defaults
        if changed := sorted(k for k, v in self.config.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v):
            raise PipelineError(f"cannot resume {self.out_dir} with another training config: {', '.join(changed)} differ")
        if saved["epochs"] != self.config.epochs:
            log.warning("resuming with %d epochs instead of %d: the learning-rate schedule changes", self.config.epochs,
                        saved["epochs"])
        self.model.load_state_dict(load_file(last[".safetensors"], device=str(self.world.device)))
        state = load_training_state(last[".state.pt"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "swa" in state:  # `last` holds the SWA mean: training goes on from the raw weights
            self.model.load_state_dict(state["swa"]["weights"])
            self.average.load(state["swa"], self.world.device)
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.best_hit_at_5, self.stale = state["best_hit_at_5"], state["stale"]
        self.kept, self.history = list(state["kept"]), list(state["history"])
        rng = state["rng"]
        if len(rng) != self.world.world_size:
            log.warning("resuming %d ranks from a run of %d: the RNG streams differ from that run",
                        self.world.world_size, len(rng))
        _set_rng_state(rng[self.world.rank % len(rng)])
        log.info("%s: resumed from %s at epoch %d, batch %d, step %d", self.name, self.out_dir, self.epoch,
                 self.batch_in_epoch, self.step)


class _WeightAverage:
    """Stochastic weight averaging: the equal-weight mean of the model's floating-point weights at the validations
    that joined it, kept as a float64 sum (the mean is then exact to float32 rounding, whatever the order)."""

    def __init__(self):
        self.count, self.sum = 0, {}

    def add(self, weights: dict[str, torch.Tensor]) -> None:
        for key, value in weights.items():
            if value.is_floating_point():
                value = value.detach().to(torch.float64, copy=True)
                self.sum[key] = value if key not in self.sum else self.sum[key] + value
        self.count += 1

    def mean(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`weights` with their averaged entries replaced by the mean (the others as they are)."""
        return {key: (self.sum[key] / self.count).to(value.dtype) if key in self.sum else value
                for key, value in weights.items()}

    def state(self) -> dict:
        return {"count": self.count, "sum": self.sum}

    def load(self, state: dict, device: torch.device) -> None:
        self.count, self.sum = int(state["count"]), {key: value.to(device) for key, value in state["sum"].items()}


@contextmanager
def _holding(model: NextConceptModel, weights: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block `model` holds `weights`, and the block gets a copy of its own; after it, its own again."""
    own = {key: value.clone() for key, value in model.state_dict().items()}
    model.load_state_dict(weights)
    try:
        yield own
    finally:
        model.load_state_dict(own)


def _best_first(checkpoints: list[dict]) -> list[dict]:
    """Best val Hit@5 first, then best cosine, then the earliest."""
    return sorted(checkpoints, key=lambda c: (-c["hit_at_5"], -c["cosine"], c["name"]))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """The torch, numpy and python RNG states as tensors and numbers (loadable with weights_only=True)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"].tolist()), python_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
