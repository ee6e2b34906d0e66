"""Checkpoints: weights in safetensors, a JSON sidecar that says what they are, and a weights-only resume state.

A checkpoint `<dir>/<name>` is:
- `<name>.safetensors`: the model's state dict (every tensor its own copy, so tied weights save too);
- `<name>.json`: the sidecar: model_name, model_config (`ModelConfig.to_dict`), d_input, encoder_fingerprint,
  bank_version, dataset_version, epoch, step, metrics, train_config, history (what `load_checkpoint` needs);
- `<name>.state.pt` (resume only): optimizer, schedule, RNG states, counters: tensors, numbers, strings,
  lists and dicts only, read back with `torch.load(weights_only=True)`;
- `<name>.onnx`, `<name>.int8.onnx`, `<name>.onnx.json` (after `lvm-pipeline export-onnx`): the weights as ONNX and
  the export's parity report (`serving.onnx_export`); saving new weights deletes them, as they no longer match.
Every file is written under a temporary name and renamed into place. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from lvm_pipeline.errors import PipelineError
from lvm_pipeline.files import atomic_write
from lvm_pipeline.models.base import NextConceptModel, build_model, config_from_dict

FORMAT = "lvm_pipeline.checkpoint/1"
EXPORT_SUFFIXES = (".onnx", ".int8.onnx", ".onnx.json")  # derived from the weights: stale once they change
SUFFIXES = (".safetensors", ".json", ".state.pt", *EXPORT_SUFFIXES)
BACKENDS = ("torch", "onnx", "onnx-int8")  # what runs a checkpoint: its weights in PyTorch, or an ONNX export


def checkpoint_files(directory: Path, name: str) -> dict[str, Path]:
    """suffix -> path of each file of checkpoint `name` in `directory`."""
    return {suffix: Path(directory) / f"{name}{suffix}" for suffix in SUFFIXES}


def save_checkpoint(directory: Path, model: NextConceptModel, sidecar: dict, training_state: dict | None = None,
                    name: str = "last") -> Path:
    """Write checkpoint `name` (weights + sidecar + the resume state if given); returns the weights' path."""
    files = checkpoint_files(directory, name)
    weights = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in model.state_dict().items()}
    blob = save(weights, metadata={"format": FORMAT, "model_name": str(sidecar.get("model_name", ""))})
    atomic_write(files[".safetensors"], lambda f: f.write(blob))
    text = json.dumps({"format": FORMAT} | sidecar, indent=2, default=_jsonable)
    atomic_write(files[".json"], lambda f: f.write(text.encode()))
    if training_state is not None:
        atomic_write(files[".state.pt"], lambda f: torch.save(training_state, f))
    else:
        files[".state.pt"].unlink(missing_ok=True)
    for suffix in EXPORT_SUFFIXES:
        files[suffix].unlink(missing_ok=True)
    return files[".safetensors"]


def delete_checkpoint(directory: Path, name: str) -> None:
    for path in checkpoint_files(directory, name).values():
        path.unlink(missing_ok=True)


def checkpoint_stem(path: Path) -> Path:
    """A checkpoint's path without suffix, from its directory (-> `best`), any of its files, or the stem."""
    path = Path(path)
    if path.is_dir():
        return path / "best"
    for suffix in sorted(SUFFIXES, key=len, reverse=True):  # ".int8.onnx" before ".onnx", ".onnx.json" before ".json"
        if path.name.endswith(suffix):
            return path.with_name(path.name[:-len(suffix)])
    return path


def read_sidecar(path: Path) -> dict:
    stem = checkpoint_stem(path)
    sidecar_path = stem.with_name(f"{stem.name}.json")
    if not sidecar_path.is_file():
        raise PipelineError(f"no checkpoint at {stem} ({sidecar_path.name} is missing)")
    return json.loads(sidecar_path.read_text())


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[NextConceptModel, dict]:
    """The model of a checkpoint (its directory, any of its files, or its path without suffix) in eval mode,
    built from the sidecar's config, and the sidecar."""
    stem = checkpoint_stem(path)
    sidecar = read_sidecar(stem)
    model = build_model(config_from_dict(sidecar["model_config"]), int(sidecar["d_input"]))
    try:
        model.load_state_dict(load_file(stem.with_name(f"{stem.name}.safetensors"), device=str(device)))
    except RuntimeError as error:  # missing, unexpected or reshaped weights: saved by another version of the family
        detail = " ".join(str(error).split())[:300]
        raise PipelineError(f"{stem}: its weights do not fit this code's {model.config.family} model ({detail})") from error
    return model.to(device).eval(), sidecar


def load_training_state(path: Path) -> dict:
    """The resume state of a checkpoint (weights-only: an object that needs unpickling is refused)."""
    stem = checkpoint_stem(path)
    state_path = stem.with_name(f"{stem.name}.state.pt")
    try:
        return torch.load(state_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise PipelineError(f"{state_path} is not a weights-only training state; refusing to unpickle it") from error


def files_of(checkpoint: Path) -> dict[str, Path]:
    """suffix -> path of each file of the checkpoint that `checkpoint` (a directory, a file or a stem) names."""
    stem = checkpoint_stem(checkpoint)
    return checkpoint_files(stem.parent, stem.name)


def backend_paths(checkpoint: Path) -> dict[str, Path]:
    """backend -> the model file it runs for `checkpoint` (the safetensors for torch)."""
    files = files_of(checkpoint)
    return {"torch": files[".safetensors"], "onnx": files[".onnx"], "onnx-int8": files[".int8.onnx"]}


def load_backend(checkpoint: Path, backend: str = "torch"):
    """The model of `checkpoint` as `backend` runs it (PyTorch, or its ONNX export: an `OnnxModel`), and the
    checkpoint's sidecar."""
    from lvm_pipeline.models.onnx import OnnxModel

    if backend not in BACKENDS:
        raise PipelineError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return load_checkpoint(checkpoint)
    path = backend_paths(checkpoint)[backend]
    if not path.is_file():
        raise PipelineError(f"no {backend} export of {checkpoint}: run lvm-pipeline export-onnx --checkpoint {checkpoint}")
    return OnnxModel(path), read_sidecar(checkpoint)


def check_compatible(sidecar: dict, bank, sequences=None) -> None:
    """PipelineError unless the checkpoint was trained on vectors of the bank's encoder (and dimension) and on
    the dataset version (bank + split + windows) of `sequences`."""
    name = sidecar.get("model_name", "the checkpoint")
    fingerprint = bank.manifest.get("encoder_fingerprint")
    if sidecar.get("encoder_fingerprint") != fingerprint:
        raise PipelineError(f"{name} was trained on vectors of encoder {sidecar.get('encoder_fingerprint')}, "
                            f"the bank holds encoder {fingerprint}: retrain it on this bank")
    if int(sidecar.get("d_input", -1)) != bank.vectors.shape[1]:
        raise PipelineError(f"{name} reads {sidecar.get('d_input')}-D vectors, the bank's are {bank.vectors.shape[1]}-D")
    if sequences is not None and sidecar.get("dataset_version") != sequences.version:
        raise PipelineError(f"{name} was trained on dataset version {sidecar.get('dataset_version')}, these training "
                            f"sequences are version {sequences.version}: retrain it on this split")


def _jsonable(value):
    """numpy scalars and paths in a sidecar."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def trained_model(run_dir: Path, sequences) -> tuple[NextConceptModel, dict, list[dict]] | str:
    """The best checkpoint of a training run with its sidecar and history, if it was trained on `sequences`;
    otherwise why not (no checkpoint; weights another version of the code saved; another encoder or dataset
    version), for the report to say."""
    best = Path(run_dir) / "best.safetensors"
    if not best.is_file():
        return f"no checkpoint in {run_dir}"
    try:
        model, sidecar = load_checkpoint(best)
        check_compatible(sidecar, sequences.bank, sequences)
    except PipelineError as error:
        return f"left out: {error}"
    history_path = Path(run_dir) / "history.json"
    return model, sidecar, json.loads(history_path.read_text()) if history_path.is_file() else []
