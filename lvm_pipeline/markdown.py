"""Markdown tables and embedded plots: what a person reads in the Dagster UI and in reports."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from lvm_pipeline.text import excerpt


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(excerpt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def embedded_png(name: str, png: bytes) -> str:
    """A PNG inline as a data URI: the Dagster UI shows metadata markdown without the files beside it."""
    return f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
