"""`python -m lvm_pipeline.training --bank DIR --sequences DIR --model NAME --out DIR [TrainConfig options]`.

Also under torchrun for DDP: `torchrun --nproc_per_node 2 -m lvm_pipeline.training ...`. Rank 0 prints the
result as one JSON line. `--plugin MODULE` imports a module first (one that registers more model configs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np

from lvm_pipeline.datasets.bank import open_bank
from lvm_pipeline.datasets.sequences import load_sequences
from lvm_pipeline.errors import PipelineError
from lvm_pipeline.training.config import TrainConfig, field_comments
from lvm_pipeline.training.trainer import train

CONVERTERS = {"int": int, "float": float, "str": str}


def _converter(type_name: str):
    """A command-line value -> the field's type; "none" is None for optional fields."""
    convert = CONVERTERS[type_name.replace(" | None", "")]
    if "None" not in type_name:
        return convert
    return lambda text: None if text.lower() == "none" else convert(text)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lvm_pipeline.training",
                                     description="Train a next-concept model on an exported bank.")
    parser.add_argument("--bank", type=Path, required=True, help="the exported concept bank's directory")
    parser.add_argument("--sequences", type=Path, required=True, help="the saved training sequences' directory")
    parser.add_argument("--model", required=True, help="a registered model config, e.g. toy_gru or gru_small")
    parser.add_argument("--out", type=Path, required=True, help="directory of the checkpoints and history.json")
    parser.add_argument("--model-name", help="the model's name in checkpoints and reports (default: --model)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--views", type=Path, help="a .npy of the bank's context views (N, D), for a model with the "
                                                  "text view (the lvm_checkpoint asset computes them with the encoder)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register more model families and configs); repeatable")
    recipe = parser.add_argument_group("training recipe (TrainConfig)")
    comments = field_comments(TrainConfig)
    for field in fields(TrainConfig):
        default = field.default_factory() if field.default is MISSING else field.default
        flag, help_text = f"--{field.name.replace('_', '-')}", f"{comments.get(field.name, '')} (default: {default})"
        if field.type == "bool":
            recipe.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif field.type == "list[int]":
            recipe.add_argument(flag, dest=field.name, type=int, nargs="*", default=default, help=help_text)
        else:
            recipe.add_argument(flag, dest=field.name, type=_converter(field.type), default=default, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for module in args.plugin:
        importlib.import_module(module)
    try:
        config = TrainConfig(**{field.name: getattr(args, field.name) for field in fields(TrainConfig)})
        sequences = load_sequences(open_bank(args.bank), args.sequences)
        views = np.load(args.views, mmap_mode="r") if args.views else None
        result = train(args.model, sequences, args.out, config, model_name=args.model_name, resume=args.resume,
                       progress=not args.no_progress, views=views)
    except (PipelineError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result.history:  # rank 0
        print(json.dumps({"best_checkpoint": str(result.best_checkpoint), "last_checkpoint": str(result.last_checkpoint),
                          "stopped_because": result.stopped_because, "best_metrics": result.best_metrics,
                          "epochs": len(result.history)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
