"""The result every gate returns, and the rules that turn figures into a GO / WARN / STOP decision.

A `Rule` grades one figure: STOP when its `stop` bound holds, GO when all its `go` bounds hold,
WARN otherwise. A gate's decision is the worst grade of its figures. `judge` builds the
`GateResult` (figures, per-figure status, thresholds and a summary line) from figures and rules.

A share is graded with its sample size (DESIGN section 6, "Small and empty batches"): given the
number of independent units behind it (`sizes`), it is graded on its one-sided 95% Wilson
interval, so that a bound counts as broken only when the whole interval lies past it. 4 of 5
articles in one domain (0.8, interval 0.44-0.96) is not evidence of a share above 0.7; 800 of
1,000 is. A figure with no data (None) is not graded; a gate with nothing graded says so.
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
Z_ONE_SIDED_95 = 1.6449
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

    def holds_somewhere(self, interval: tuple[float, float]) -> bool:
        """True when some value of the interval satisfies the bound (an ordering bound: <, <=, >, >=)."""
        return self.holds(interval[1] if self._lower_limit else interval[0])

    def holds_everywhere(self, interval: tuple[float, float]) -> bool:
        """True when every value of the interval satisfies the bound (an ordering bound)."""
        return self.holds(interval[0] if self._lower_limit else interval[1])

    @property
    def _lower_limit(self) -> bool:
        """True for `>` / `>=`, False for `<` / `<=`; an interval is not graded against `==` or `!=`."""
        if self.op not in ("<", "<=", ">", ">="):
            raise ValueError(f"a share's interval is graded against an ordering bound, not {self.op!r}")
        return self.op in (">", ">=")

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

    def grade(self, value: Figure, interval: tuple[float, float] | None = None) -> Decision | None:
        """None for an undefined figure (no data to judge). With the figure's `interval`, STOP only when the
        whole interval is past the STOP bound, WARN only when the whole interval is outside the GO range."""
        if value is None:
            return None
        if interval is not None:
            if self.stop is not None and self.stop.holds_everywhere(interval):
                return "STOP"
            return "GO" if all(b.holds_somewhere(interval) for b in self.go) else "WARN"
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
    intervals: dict[str, list] = field(default_factory=dict)  # share -> [low, high, n]: what it was graded on

    @property
    def passed(self) -> bool:
        return self.decision != "STOP"

    @property
    def graded(self) -> bool:
        """False when no figure could be graded (nothing to judge): such a result never alerts."""
        return bool(self.status)

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def markdown(self) -> str:
        """Summary line, figures table (value, threshold, status), other settings, worst examples."""
        rows = [(name, fmt(value), _interval_text(self.intervals.get(name)), self.thresholds.get(name, ""),
                 self.status.get(name, "not graded" if name in self.thresholds and value is None else ""))
                for name, value in self.figures.items()]
        heading = self.decision if self.graded else "not graded"
        parts = [f"**{self.gate}: {heading}** — {self.summary}", "",
                 md_table(("figure", "value", "95% interval (n)", "threshold", "status"), rows)]
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
          note: str = "", sizes: Mapping[str, int] | None = None, not_graded: str = "") -> GateResult:
    """Grade `figures` by `rules` (keyed by figure name) into a GateResult.

    The decision is the worst grade; undefined (None) figures are not graded. A share named in
    `sizes` (figure -> the number of independent units it is a share of) is graded on its Wilson
    interval. The summary (without the decision itself) names the figures graded as the decision
    with their rules (for GO, all graded figures), then `note`; with nothing graded, it is
    "not graded" and `not_graded`, the reason.
    """
    plain_figures = {k: plain(v) for k, v in figures.items()}
    intervals = {name: [*wilson_interval(plain_figures[name], n), n] for name, n in (sizes or {}).items()
                 if plain_figures[name] is not None and n}
    status = {name: grade for name, rule in rules.items()
              if (grade := rule.grade(plain_figures[name], _pair(intervals.get(name)))) is not None}
    decision: Decision = max(status.values(), key=_SEVERITY.__getitem__, default="GO")
    if not status:
        summary = f"not graded: {not_graded}" if not_graded else ""
    elif decision == "GO":
        summary = "all graded figures GO: " + ", ".join(f"{n}={fmt(plain_figures[n])}" for n in status)
    else:
        summary = ", ".join(f"{n}={fmt(plain_figures[n])} ({rules[n]}"
                            + (f"; 95% interval {_interval_text(intervals[n])}" if n in intervals else "") + ")"
                            for n, g in status.items() if g == decision)
    if note:
        summary = f"{summary}; {note}" if summary else note
    summary = summary or "not graded"
    thresholds = {name: str(rule) + (" (on the 95% interval)" if name in (sizes or {}) else "")
                  for name, rule in rules.items()} | dict(settings or {})
    return GateResult(gate=gate, decision=decision, figures=plain_figures, thresholds=thresholds,
                      summary=summary, worst=[{k: plain(v) for k, v in row.items()} for row in worst],
                      status=status, intervals=intervals)


def wilson_interval(share: float, n: int, z: float = Z_ONE_SIDED_95) -> tuple[float, float]:
    """The Wilson score interval of a share of `n` units, each side at one-sided 95% by default."""
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(share * (1 - share), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _pair(interval: list | None) -> tuple[float, float] | None:
    return (interval[0], interval[1]) if interval else None


def _interval_text(interval: list | None) -> str:
    return f"{interval[0]:.3g}-{interval[1]:.3g} (n={interval[2]})" if interval else ""


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
