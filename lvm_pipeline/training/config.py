"""The training recipe: one documented dataclass, saved in every checkpoint's sidecar (DESIGN.md section 8)."""

from __future__ import annotations

import inspect
import re
from dataclasses import asdict, dataclass, field, fields

LOSSES = ("cosine", "mse")
POSITIONS = ("all", "last")
DECAY_OVER = ("epochs", "time_budget")
# fields that may change when a run is resumed: they do not change what the run computes
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "time_budget_s", "device", "num_threads", "keep_best"})


@dataclass
class TrainConfig:
    epochs: int = 20  # passes over the train split's articles
    batch_size: int = 32  # sequences (whole or cropped articles) per forward/backward pass, per process
    lr: float = 3e-4  # peak learning rate of AdamW, reached at the end of the warmup
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_steps: float = 0.05  # linear warmup: >= 1 a number of optimizer steps, < 1 a fraction of all of them
    min_lr_ratio: float = 0.1  # the cosine decay ends at lr * min_lr_ratio on the last optimizer step
    decay_over: str = "epochs"  # "epochs": warmup and decay span all epochs; "time_budget": or time_budget_s if shorter
    grad_clip: float | None = 1.0  # clip the global gradient norm to this (None: no clipping)
    accumulation_steps: int = 1  # batches whose gradients are summed into one optimizer step
    loss: str = "cosine"  # "cosine" (1 - cos) or "mse" between the prediction and the next vector
    infonce_alpha: float = 0.0  # weight of the in-batch InfoNCE term added to the loss (0: off)
    infonce_temperature: float = 0.07  # temperature of the InfoNCE logits (cosines / temperature)
    hard_negatives: int = 0  # per target, InfoNCE also scores its k nearest train concepts of other articles
    curriculum_epochs: int = 0  # the first N epochs crop articles to curriculum_max_len + 1 concepts (short first)
    curriculum_max_len: int = 4  # the window of those first epochs
    positions: str = "all"  # "all": a loss at every position of the causal sequence; "last": each sequence's last only
    max_len: int = 64  # longer articles are cropped to a random window of max_len + 1 concepts each epoch
    group_by_length: bool = False  # batch articles of similar length (less padding, less varied negatives)
    progressive_articles: list[int] = field(default_factory=list)  # stages of this many train articles (empty: off)
    progressive_epochs: int = 1  # epochs per progressive stage (a seeded subset, each containing the one before)
    context_dropout: float = 0.0  # each training input vector replaced by zeros with this probability (0: off)
    input_noise: float = 0.0  # expected L2 norm of Gaussian noise added to each training input vector (0: off)
    shuffle_window: int = 0  # training inputs permuted within windows of this many positions (0: off)
    swa_start: float = 0.0  # past this share of the run, validate and save the running mean of the weights (0: off)
    patience: int | None = 5  # stop after this many validations without a better val Hit@5 (None: never)
    keep_best: int = 3  # per-epoch checkpoints kept: the best K by val Hit@5 (besides `last` and `best`)
    time_budget_s: float | None = None  # wall-clock seconds for this run; it then validates, saves and stops
    seed: int = 0  # seeds the weights, the article order, the crops, dropout and the validation subset
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"
    bf16: bool = True  # bf16 autocast for the forward pass on CUDA (ignored on CPU)
    val_max_queries: int | None = 5000  # validate on at most this many val windows (a seeded subset; None: all)
    val_batch_size: int = 256  # val windows per forward pass
    num_threads: int | None = None  # torch CPU threads during training (None: leave torch's setting)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.decay_over not in DECAY_OVER:
            raise ValueError(f"decay_over must be one of {DECAY_OVER}, got {self.decay_over!r}")
        if self.decay_over == "time_budget" and not (self.time_budget_s or 0) > 0:
            raise ValueError("decay_over='time_budget' needs a time_budget_s > 0")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "accumulation_steps": self.accumulation_steps,
                    "max_len": self.max_len, "curriculum_max_len": self.curriculum_max_len, "keep_best": self.keep_best,
                    "val_batch_size": self.val_batch_size, "infonce_temperature": self.infonce_temperature,
                    "progressive_epochs": self.progressive_epochs}
        if bad := [name for name, value in positive.items() if value <= 0]:
            raise ValueError(f"{', '.join(bad)} must be > 0")
        if self.hard_negatives < 0 or self.curriculum_epochs < 0 or self.seed < 0:
            raise ValueError("hard_negatives, curriculum_epochs and seed must be >= 0")
        if self.lr < 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1 or self.infonce_alpha < 0:
            raise ValueError("lr, warmup_steps and infonce_alpha must be >= 0 and min_lr_ratio within [0, 1]")
        self.progressive_articles = [int(n) for n in self.progressive_articles]  # a tuple compares equal to its sidecar
        stages = self.progressive_articles
        if any(n <= 0 for n in stages) or any(later <= earlier for earlier, later in zip(stages, stages[1:])):
            raise ValueError(f"progressive_articles must be positive and increasing, got {stages}")
        if not (0 <= self.swa_start < 1 and 0 <= self.context_dropout < 1 and self.input_noise >= 0):
            raise ValueError("swa_start and context_dropout must be within [0, 1) and input_noise >= 0")
        if self.shuffle_window < 0 or self.shuffle_window == 1:
            raise ValueError(f"shuffle_window must be 0 (off) or >= 2, got {self.shuffle_window}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        if unknown := set(values) - known:
            raise ValueError(f"unknown training config fields: {sorted(unknown)}")
        return cls(**values)

    def warmup_optimizer_steps(self, total_steps: int) -> int:
        """The warmup length in optimizer steps for a run of `total_steps`."""
        return int(self.warmup_steps) if self.warmup_steps >= 1 else round(self.warmup_steps * total_steps)


# the recipe the pipeline trains every family with (lvm_checkpoint's Config defaults, and a sweep's trial 0): the
# demo's, found in docs/TRAINING.md's "The demo's recipe"; a run adds its seed and wall-clock budget
PIPELINE_RECIPE = TrainConfig(epochs=20, batch_size=256, lr=3e-3, infonce_alpha=1.0, infonce_temperature=0.05,
                              hard_negatives=8, patience=4)


def field_comments(cls: type = TrainConfig) -> dict[str, str]:
    """Field name -> its comment in the class source (the command line's help texts)."""
    pattern = re.compile(r"^\s+(\w+):[^#]*#\s*(.+)$")
    return {m[1]: m[2] for line in inspect.getsource(cls).splitlines() if (m := pattern.match(line))}
