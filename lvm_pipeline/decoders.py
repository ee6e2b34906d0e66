"""vec2text inversion: concept vectors back to text, from local inversion and corrector weights.

Retrieval decoding (nearest concept in the bank) lives in the decoder_baseline gate and is always
available. vec2text is optional: it needs `pip install 'lvm_pipeline[vec2text]'` (vec2text 0.0.13
pins transformers<5, so use an environment of its own) and local weights, since model hubs are
not reached from here. Its corrector was trained on 768-D GTR-T5-base embeddings: it inverts
vectors of that encoder only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from lvm_pipeline.config import settings
from lvm_pipeline.errors import PipelineError

VEC2TEXT_DIM = 768


class Vec2TextUnavailable(PipelineError):
    """vec2text cannot run here: package, weights or encoder dimension."""


class Vec2TextInverter:
    """Invert embeddings with a vec2text corrector loaded from local directories."""

    def __init__(self, inversion_dir: str | Path, corrector_dir: str | Path, num_steps: int = 20, device: str = "cpu"):
        for what, path in (("inversion", inversion_dir), ("corrector", corrector_dir)):
            if not Path(path).is_dir():
                raise Vec2TextUnavailable(f"vec2text {what} weights: no directory {path}")
        try:
            import vec2text
        except ImportError as exc:
            raise Vec2TextUnavailable(
                "vec2text is not installed: pip install 'lvm_pipeline[vec2text]' "
                "(it needs transformers<5: install it in an environment of its own)") from exc
        inversion = vec2text.models.InversionModel.from_pretrained(str(inversion_dir))
        corrector = vec2text.models.CorrectorEncoderModel.from_pretrained(str(corrector_dir))
        self._vec2text = vec2text
        self._corrector = vec2text.load_corrector(inversion, corrector)
        self.num_steps = num_steps
        self.device = device

    def invert(self, vectors: np.ndarray) -> list[str]:
        check_invertible(vectors)
        import torch

        embeddings = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device)
        return list(self._vec2text.invert_embeddings(embeddings=embeddings, corrector=self._corrector,
                                                     num_steps=self.num_steps))


def configured_inverter(vectors: np.ndarray) -> Vec2TextInverter | None:
    """The inverter of the local weights in LVM_VEC2TEXT_INVERSION / _CORRECTOR, None when they are not set;
    Vec2TextUnavailable when it cannot invert `vectors` (checked before the weights load)."""
    dirs = settings().vec2text_dirs
    if dirs is None:
        return None
    check_invertible(vectors)
    return _loaded(*dirs)


@lru_cache(maxsize=1)
def _loaded(inversion_dir: str, corrector_dir: str) -> Vec2TextInverter:
    return Vec2TextInverter(inversion_dir, corrector_dir)  # once per process: loading the weights takes long


def check_invertible(vectors: np.ndarray) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != VEC2TEXT_DIM:
        raise Vec2TextUnavailable(
            f"vec2text's corrector inverts {VEC2TEXT_DIM}-D GTR-T5-base embeddings; these vectors are "
            f"{vectors.shape[-1]}-D: set LVM_ENCODER to local GTR-T5-base weights to use it")
