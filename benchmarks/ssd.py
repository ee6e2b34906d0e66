"""Chunked SSD vs the sequential recurrence (Mamba-2's state space model, pure PyTorch, forward, float32).

    .venv/bin/python benchmarks/ssd.py [--lengths 100 1000 4000] [--batch 4] [--repeats 3]

Head counts default to `mamba2_small`'s layer (d_model 256, expand 2: 8 heads of 64 channels, state 64, one group).
Each figure is the best of `repeats` timed runs after a warm-up; both run in this process, one after the other.
On a shared machine, `--threads 1` is steadier (two threads slow down a lot when another process holds a core).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lvm_pipeline.models.mamba2 import ssd_chunked, ssd_recurrence


def best_seconds(fn: Callable[..., torch.Tensor], inputs: tuple, repeats: int) -> tuple[float, torch.Tensor]:
    """The fastest of `repeats` runs of fn(*inputs), and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*inputs)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 4000], help="sequence lengths")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--headdim", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, {args.heads} heads x {args.headdim}, state {args.d_state}, {args.groups} group(s), "
          f"chunks of {args.chunk_size}, {torch.get_num_threads()} threads, float32, forward, best of {args.repeats}")
    print(f"{'length':>7} {'chunked ms':>11} {'recurrence ms':>14} {'speed-up':>9} {'max rel diff':>13}")
    for length in args.lengths:
        x = torch.randn(args.batch, length, args.heads, args.headdim)
        dt = F.softplus(torch.randn(args.batch, length, args.heads) - 4)  # around mamba_ssm's initial dt
        A = -torch.empty(args.heads).uniform_(1, 16)  # mamba_ssm's initial range
        B, C = (torch.randn(args.batch, length, args.groups, args.d_state) for _ in range(2))
        with torch.no_grad():
            ssd_chunked(x, dt, A, B, C, args.chunk_size)  # warm-up: a new shape's first call pays for allocation
            ssd_recurrence(x[:, :8], dt[:, :8], A, B[:, :8], C[:, :8])
            chunked_s, chunked = best_seconds(ssd_chunked, (x, dt, A, B, C, args.chunk_size), args.repeats)
            recurrence_s, recurrence = best_seconds(ssd_recurrence, (x, dt, A, B, C), args.repeats)
        rel_diff = ((chunked - recurrence).abs().max() / recurrence.abs().max()).item()
        speed_up = recurrence_s / chunked_s
        print(f"{length:>7} {chunked_s * 1e3:>11.1f} {recurrence_s * 1e3:>14.1f} {speed_up:>8.1f}x {rel_diff:>13.1e}")


if __name__ == "__main__":
    main()
