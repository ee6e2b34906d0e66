"""The result every gate returns, and the rules that turn figures into a GO / WARN / STOP decision.

A `Rule` grades one figure: STOP when its `stop` bound holds, GO when all its `go` bounds hold,
WARN otherwise. A gate's decision is the worst grade of its figures. `judge` builds the
`GateResult` (figures, per-figure status, thresholds and a summary line) from figures and rules.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lvm_pipeline.markdown import md_table

Decision = Literal["GO", "WARN", "STOP"]
Figure = float | int | None

_SEVERITY: dict[Decision, int] = {"GO": 0, "WARN": 1, "STOP": 2}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}


@dataclass(frozen=True)
class Bound:
    """`value <op> limit`, e.g. `Bound(">=", 0.3)`."""

    op: str
    limit: float

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}"


def at_least(x: float) -> Bound:
    return Bound(">=", x)


def above(x: float) -> Bound:
    return Bound(">", x)


def at_most(x: float) -> Bound:
    return Bound("<=", x)


def below(x: float) -> Bound:
    return Bound("<", x)


@dataclass(frozen=True)
class Rule:
    """GO when every `go` bound holds, STOP when `stop` holds, WARN otherwise."""

    go: tuple[Bound, ...]
    stop: Bound | None = None

    def grade(self, value: Figure) -> Decision | None:
        """None for an undefined figure (no data to judge)."""
        if value is None:
            return None
        if self.stop is not None and self.stop.holds(value):
            return "STOP"
        return "GO" if all(b.holds(value) for b in self.go) else "WARN"

    def __str__(self) -> str:
        go = " and ".join(str(b) for b in self.go)
        return f"GO {go}; STOP {self.stop}" if self.stop else f"GO {go}; else WARN"


@dataclass
class GateResult:
    """One gate's verdict on one batch: figures, what they were held to, and the worst examples."""

    gate: str
    decision: Decision
    figures: dict[str, Figure]
    thresholds: dict[str, float | int | str]
    summary: str
    worst: list[dict] = field(default_factory=list)
    status: dict[str, Decision] = field(default_factory=dict)  # figure -> its own grade

    @property
    def passed(self) -> bool:
        return self.decision != "STOP"

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def markdown(self) -> str:
        """Summary line, figures table (value, threshold, status), other settings, worst examples."""
        rows = [(name, fmt(value), self.thresholds.get(name, ""), self.status.get(name, ""))
                for name, value in self.figures.items()]
        parts = [f"**{self.gate}: {self.decision}** — {self.summary}", "",
                 md_table(("figure", "value", "threshold", "status"), rows)]
        settings = {k: v for k, v in self.thresholds.items() if k not in self.figures}
        if settings:
            parts += ["", "settings: " + ", ".join(f"{k}: {fmt(v)}" for k, v in settings.items())]
        if self.worst:
            headers = list(dict.fromkeys(k for row in self.worst for k in row))
            parts += ["", "worst examples:", "",
                      md_table(headers, [[fmt(row.get(h, "")) for h in headers] for row in self.worst])]
        return "\n".join(parts)


def judge(gate: str, figures: Mapping[str, Any], rules: Mapping[str, Rule], *,
          settings: Mapping[str, float | int | str] | None = None, worst: Sequence[dict] = (),
          note: str = "") -> GateResult:
    """Grade `figures` by `rules` (keyed by figure name) into a GateResult.

    The decision is the worst grade; undefined (None) figures are not graded. The summary (without
    the decision itself) names the figures graded as the decision with their rules (for GO, all
    graded figures), then `note`.
    """
    plain_figures = {k: plain(v) for k, v in figures.items()}
    status = {name: grade for name, rule in rules.items()
              if (grade := rule.grade(plain_figures[name])) is not None}
    decision: Decision = max(status.values(), key=_SEVERITY.__getitem__, default="GO")
    if not status:
        summary = ""
    elif decision == "GO":
        summary = "all graded figures GO: " + ", ".join(f"{n}={fmt(plain_figures[n])}" for n in status)
    else:
        summary = ", ".join(f"{n}={fmt(plain_figures[n])} ({rules[n]})" for n, g in status.items() if g == decision)
    if note:
        summary = f"{summary}; {note}" if summary else note
    summary = summary or "not graded"
    thresholds = {name: str(rule) for name, rule in rules.items()} | dict(settings or {})
    return GateResult(gate=gate, decision=decision, figures=plain_figures, thresholds=thresholds,
                      summary=summary, worst=[{k: plain(v) for k, v in row.items()} for row in worst],
                      status=status)


def plain(value: Any) -> Any:
    """Plain JSON-safe python value: numpy scalars unwrapped, NaN/inf -> None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mean_or_none(values: np.ndarray) -> float | None:
    """Mean as a python float; None for no values."""
    return float(np.mean(values)) if np.size(values) else None


def fmt(value: Any) -> str:
    """A figure for people: 4 significant digits, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
