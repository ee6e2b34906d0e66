import io
import math

from tqdm import tqdm

from lvm_pipeline.progress import PlainProgress, library_bars, progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_outside_a_terminal_a_plain_line_at_most_every_interval():
    stream, clock = io.StringIO(), FakeClock()
    with progress(36_310, "embed b1", "concept", stream=stream, interval_s=5.0, clock=clock) as bar:
        assert isinstance(bar, PlainProgress)
        for _ in range(36_310 // 10):
            clock.now += 0.01  # 3,631 updates over 36.31 s
            bar.update(10)
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert 2 <= len(lines) <= math.ceil(clock.now / 5.0) + 1
    assert all(line.startswith("embed b1: ") for line in lines)
    assert "/36,310 concepts (" in lines[0] and ", eta " in lines[0]
    assert lines[-1] == "embed b1: 36,310/36,310 concepts in 36.3s (1,000.0/s)"


def test_a_short_loop_writes_only_its_final_line():
    stream, clock = io.StringIO(), FakeClock()
    bar = progress(None, "parse b1", "record", stream=stream, clock=clock)
    bar.update(1_000)
    bar.update(234)
    clock.now = 125.0
    bar.close()
    bar.close()  # once
    assert stream.getvalue() == "parse b1: 1,234 records in 2m05s (9.9/s)\n"


def test_resumed_counts_and_postfix():
    stream, clock = io.StringIO(), FakeClock()
    bar = progress(100, "gru epoch 2/3", "batch", initial=40, stream=stream, interval_s=5.0, clock=clock)
    bar.set_postfix(loss="0.1234")
    clock.now = 6.0
    bar.update(30)
    bar.close()
    assert stream.getvalue().splitlines() == [
        "gru epoch 2/3: 70/100 batches (70.0%), 5.0/s, eta 6.0s, loss=0.1234",
        "gru epoch 2/3: 70/100 batches in 6.0s (5.0/s), loss=0.1234",
    ]


def test_disabled_writes_nothing():
    stream = io.StringIO()
    with progress(10, "quiet", stream=stream, disable=True) as bar:
        bar.update(10)
        bar.set_postfix(loss="1")
    assert stream.getvalue() == ""


def test_in_a_terminal_a_tqdm_bar():
    stream = Terminal()
    with progress(10, "tty", "concept", stream=stream) as bar:
        assert isinstance(bar, tqdm) and not isinstance(bar, PlainProgress)
        bar.update(10)
    assert "\r" in stream.getvalue()


def test_library_bars_off_outside_a_terminal_only():
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    with library_bars(io.StringIO()):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    with library_bars(Terminal()):
        assert hf_logging.is_progress_bar_enabled()
