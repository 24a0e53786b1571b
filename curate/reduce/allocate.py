"""How many samples each cluster keeps: the budget split over clusters, exactly.

Modes (weights per cluster of n samples): `proportional` (n: the kept set has the corpus' cluster mix),
`sqrt` (sqrt n: the head shrinks more than the tail) and `balanced` (1: every cluster the same share).
A cluster never keeps more than it has: clusters whose share exceeds their size keep all of it and the rest
of the budget is split again over the others (water-filling), so the total is the budget exactly. Shares
are then rounded by largest remainder (Hamilton's method): floors first, the leftover units to the largest
fractional parts, ties to the larger cluster and then the lower cluster index, so the result is
deterministic.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np

Allocation = Literal["proportional", "sqrt", "balanced"]


def budget_of(total: int, fraction: float | None = None, count: int | None = None) -> int:
    """The number of samples to keep out of `total`: round(fraction * total) (half up), or min(count, total)."""
    if count is not None:
        return max(0, min(int(count), total))
    if fraction is None:
        raise ValueError("set fraction or count")
    return max(0, min(total, math.floor(fraction * total + 0.5)))


def weights_of(sizes: np.ndarray, mode: Allocation) -> np.ndarray:
    sizes = sizes.astype(np.float64)
    if mode == "proportional":
        return sizes
    if mode == "sqrt":
        return np.sqrt(sizes)
    if mode == "balanced":
        return (sizes > 0).astype(np.float64)
    raise ValueError(f"unknown allocation {mode!r} (proportional, sqrt or balanced)")


def allocate(sizes, budget: int, mode: Allocation = "proportional") -> np.ndarray:
    """Per-cluster quotas: 0 <= quota <= size, sum(quota) == min(budget, sum(sizes))."""
    sizes = np.asarray(sizes, np.int64)
    if (sizes < 0).any():
        raise ValueError("cluster sizes must be >= 0")
    budget = int(budget)
    if budget < 0:
        raise ValueError("budget must be >= 0")
    if budget >= sizes.sum():
        return sizes.copy()
    weights = weights_of(sizes, mode)
    quota = np.zeros_like(sizes)
    open_ = sizes > 0
    remaining = budget
    while True:  # water-filling: at most one pass per cluster, usually one or two
        w = np.where(open_, weights, 0.0)
        ideal = remaining * w / w.sum()
        full = open_ & (ideal >= sizes - 1e-9)
        if not full.any():
            break
        quota[full] = sizes[full]
        remaining -= int(sizes[full].sum())
        open_ &= ~full
    base = np.where(open_, np.floor(ideal), 0).astype(np.int64)
    left = remaining - int(base.sum())
    if left > 0:
        idx = np.flatnonzero(open_)
        frac = (ideal - base)[idx]
        order = np.lexsort((idx, -sizes[idx], -frac))  # largest fraction, then larger cluster, then lower index
        base[idx[order[:left]]] += 1
    quota[open_] = base[open_]
    return quota
