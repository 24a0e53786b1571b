"""Budget allocation over clusters: exact totals, caps at cluster size, the three modes, rounding."""
from __future__ import annotations

import numpy as np
import pytest

from curate.reduce.allocate import allocate, budget_of


@pytest.mark.parametrize("mode", ["proportional", "sqrt", "balanced"])
def test_exact_total_and_caps_over_many_shapes(mode):
    rng = np.random.default_rng(0)
    for trial in range(300):
        k = int(rng.integers(1, 40))
        sizes = rng.integers(0, 2000, size=k) if trial % 2 else rng.pareto(1.2, size=k).astype(int) + 1
        total = int(sizes.sum())
        for budget in {0, 1, total // 7, total // 2, max(total - 1, 0), total, total + 5}:
            q = allocate(sizes, budget, mode)
            assert q.sum() == min(budget, total), (sizes, budget)
            assert (q >= 0).all() and (q <= sizes).all()


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.24, 1 / 3, 0.5, 0.9, 1.0])
def test_budget_of_fraction_is_rounded_half_up(fraction):
    for total in (0, 1, 7, 100, 2_820_000):
        assert budget_of(total, fraction) == int(np.floor(fraction * total + 0.5))
    assert budget_of(10, count=3) == 3 and budget_of(10, count=30) == 10 and budget_of(10, count=0) == 0


def test_modes_follow_their_weights():
    sizes = np.array([6400, 1600, 400, 100])
    # proportional: the corpus mix; sqrt: sqrt sizes (80:40:20:10); balanced: equal shares
    assert allocate(sizes, 850, "proportional").tolist() == [640, 160, 40, 10]
    assert allocate(sizes, 1500, "sqrt").tolist() == [800, 400, 200, 100]
    assert allocate(sizes, 400, "balanced").tolist() == [100, 100, 100, 100]


def test_small_clusters_give_the_rest_to_the_others():
    # balanced: the 3-sample and 10-sample clusters keep everything; 387 is split between the two large ones
    q = allocate([3, 10, 1000, 500], 400, "balanced")
    assert q.tolist() == [3, 10, 194, 193]
    # sqrt with a cap that appears only after the first redistribution
    # (20 one-sample clusters take 20; then the 11-sample one's share, 80 * sqrt 11 / (sqrt 11 + 20) = 11.4, caps)
    q = allocate([1] * 20 + [11, 400], 100, "sqrt")
    assert q.tolist() == [1] * 20 + [11, 69]
    assert allocate([1, 4, 10_000], 50, "sqrt").tolist() == [0, 1, 49]  # shares 0.49, 0.97, 48.5
    assert allocate([0, 0, 5], 3, "balanced").tolist() == [0, 0, 3]


def test_largest_remainder_and_ties_are_deterministic():
    # 10 * [1/3, 1/3, 1/3] -> 3.33 each: the leftover unit goes to the larger cluster (ties: lower index)
    assert allocate([30, 30, 30], 10).tolist() == [4, 3, 3]
    assert allocate([30, 31, 30], 10).tolist() == [3, 4, 3]
    # proportional: 7 * [0.55, 0.3, 0.15] = [3.85, 2.1, 1.05] -> floors 3, 2, 1 and the unit to 0.85
    assert allocate([55, 30, 15], 7).tolist() == [4, 2, 1]


def test_bad_arguments():
    with pytest.raises(ValueError):
        allocate([1, -1], 1)
    with pytest.raises(ValueError):
        allocate([1, 1], -1)
    with pytest.raises(ValueError):
        allocate([5, 5], 3, "zipf")
