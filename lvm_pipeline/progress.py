"""Progress of long loops: a tqdm bar in a terminal, else a plain line every few seconds.

Written to a file or a Dagster compute log, a tqdm bar leaves one redraw per refresh (carriage
returns and all); outside a terminal `progress` writes plain lines a person can read instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm


def progress(total: int | None, desc: str, unit: str = "it", initial: int = 0, stream: TextIO | None = None,
             interval_s: float = 5.0, *, leave: bool = True, disable: bool = False,
             clock: Callable[[], float] = time.monotonic):
    """A tqdm bar on `stream` (default stderr) when it is a terminal, else a PlainProgress; silent when `disable`."""
    stream = sys.stderr if stream is None else stream
    if disable or is_terminal(stream):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, leave=leave, disable=disable,
                    dynamic_ncols=True)
    return PlainProgress(total, desc, unit, initial, stream, interval_s, clock)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class PlainProgress:
    """The part of tqdm our loops use, as one plain line at most every `interval_s` seconds and one at close."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, stream: TextIO, interval_s: float,
                 clock: Callable[[], float]):
        self.total, self.desc, self.units = total, desc, unit if unit == "it" else _plural(unit)
        self.n = self.initial = initial
        self.stream, self.interval_s, self.clock = stream, interval_s, clock
        self.started = self.last_line = clock()
        self.postfix, self.closed = "", False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last_line >= self.interval_s:
            self._write(final=False)

    def set_postfix(self, **values) -> None:
        self.postfix = "".join(f", {key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(final=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, final: bool) -> None:
        self.last_line = self.clock()
        elapsed = self.last_line - self.started
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        count = f"{self.n:,}" if self.total is None else f"{self.n:,}/{self.total:,}"
        if final:
            line = f"{count} {self.units} in {_duration(elapsed)} ({rate:,.1f}/s)"
        else:
            share = f" ({100 * self.n / self.total:.1f}%)" if self.total else ""
            eta = f", eta {_duration((self.total - self.n) / rate)}" if self.total and rate > 0 else ""
            line = f"{count} {self.units}{share}, {rate:,.1f}/s{eta}"
        self.stream.write(f"{self.desc}: {line}{self.postfix}\n")
        self.stream.flush()


@contextmanager
def library_bars(stream: TextIO | None = None) -> Iterator[None]:
    """transformers' and huggingface_hub's own bars ("Loading weights", downloads) off unless `stream` is a terminal."""
    from transformers.utils import logging as hf_logging

    if is_terminal(sys.stderr if stream is None else stream) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
