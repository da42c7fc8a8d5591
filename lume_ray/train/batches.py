"""[3 unlearn] Batches: (dataset size, batch size, step, seed, stream) -> the row indices of that step's global batch.

A pure function of (seed, step): resuming needs no sampler state, a longer run passes through every shorter
one (what makes a trial's evaluation points a trajectory), and the global batch is the same whatever the
number of workers (each takes a contiguous slice of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

FORGET_STREAM, RETAIN_STREAM, EVAL_STREAM = 0, 1, 2  # independent seeded streams


@lru_cache(maxsize=64)
def _permutation(n: int, seed: int, stream: int, epoch: int) -> tuple[int, ...]:
    import torch  # heavy: torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + stream * 10_007 + epoch)
    return tuple(torch.randperm(n, generator=gen).tolist())


def batch_indices(n: int, batch: int, step: int, seed: int, stream: int) -> list[int]:
    """Row indices of the global batch at ``step`` (1-based): epoch after epoch of seeded permutations."""
    out = []
    for pos in range((step - 1) * batch, step * batch):
        epoch, i = divmod(pos, n)
        out.append(_permutation(n, seed, stream, epoch)[i])
    return out


def worker_slice(indices: Sequence[int], rank: int, world: int) -> list[int]:
    micro = len(indices) // world
    return list(indices[rank * micro:(rank + 1) * micro])
