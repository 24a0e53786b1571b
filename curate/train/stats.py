"""Paired comparison of two data sets: a t interval over seeds, a bootstrap over eval examples, a verdict.

Why both: seeds measure how much the training run varies (same data, another init and order), the
bootstrap how much the eval set's finite sample varies (same models, another draw of eval examples).
"Uninformative" when neither data set is above chance on the metric (nothing was learned to compare).
Else a difference is called only when both 95% intervals exclude zero on the same side; otherwise the
verdict is "no detectable difference". Never from std + std, which is not a test.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

LEVEL = 0.95
BOOTSTRAP_REPS = 2000
BETTER, WORSE, NONE, TOO_FEW = "better", "worse", "no detectable difference", "undetermined (fewer than 2 seeds)"
NO_SPREAD = "undetermined (every seed gave the same difference: no spread to build an interval on)"
NOT_LEARNED = "uninformative (neither data set is above chance on this metric: nothing learned to compare)"
DIFF_RANGE = (-1.0, 1.0)  # every metric is an accuracy in [0, 1], so a difference of two lies in [-1, 1]


def paired_t_interval(a: list[float], b: list[float], level: float = LEVEL) -> dict:
    """Mean of the per-seed differences a_s - b_s with its t confidence interval (None below 2 seeds, and
    None with `no_spread` when every seed's difference is the same: the t interval would have zero width,
    a certainty that two or three equal numbers do not give)."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"diff": None, "lo": None, "hi": None, "n": 0}
    mean = float(d.mean())
    if d.size < 2:
        return {"diff": mean, "lo": None, "hi": None, "n": int(d.size)}
    if np.allclose(d, d[0], rtol=0, atol=1e-9):  # (a metric in steps of 1/examples, equal in every seed): a zero-width interval
        return {"diff": mean, "lo": None, "hi": None, "n": int(d.size), "no_spread": True}  # would claim certainty
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return {"diff": mean, "lo": mean - half, "hi": mean + half, "n": int(d.size)}


def bootstrap_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL, reps: int = BOOTSTRAP_REPS,
                       seed: int = 0) -> dict:
    """Percentile bootstrap CI of mean(a) - mean(b) resampling eval examples, paired by example.

    `a` and `b` are (seeds x examples) per-example scores of two arms on the same eval set; each
    example's score is averaged over seeds first, then examples are drawn with replacement (NaN, an
    example without this attribute, is left out).
    """
    with warnings.catch_warnings():  # an example NaN in every seed stays NaN and is dropped below
        warnings.simplefilter("ignore", RuntimeWarning)
        d = np.nanmean(np.asarray(a, dtype=float), axis=0) - np.nanmean(np.asarray(b, dtype=float), axis=0)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"lo": None, "hi": None, "examples": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(reps)
    for start in range(0, reps, 256):  # bounded memory on large eval sets
        n = min(256, reps - start)
        means[start:start + n] = d[rng.integers(0, d.size, (n, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return {"lo": float(lo), "hi": float(hi), "examples": int(d.size)}


def verdict(t: dict, boot: dict, learned: tuple = (None, None)) -> str:
    """better / worse when both intervals exclude zero on the same side, else no detectable difference.

    `learned`: whether each side is above chance on this metric (above_baseline's `learned`). When both are
    False, no interval can say anything about the data: two models that learned nothing differ only by noise
    around chance, and "no detectable difference" would read as "the data sets are equally good"."""
    if learned[0] is False and learned[1] is False:
        return NOT_LEARNED
    if t.get("no_spread"):
        return NO_SPREAD
    if t.get("lo") is None or boot.get("lo") is None:
        return TOO_FEW
    if t["lo"] > 0 and boot["lo"] > 0:
        return BETTER
    if t["hi"] < 0 and boot["hi"] < 0:
        return WORSE
    return NONE


def above_baseline(values: list[float], baseline: float, level: float = LEVEL) -> dict:
    """Is a per-seed accuracy above its majority-class baseline? t interval of mean - baseline over seeds.

    Why: "shape is learned" needs more than a mean above chance; `learned` is True only when the whole
    95% interval over seeds lies above the baseline, False when the mean is at or below it (any number of
    seeds), else None (one seed above it). `below`: the whole interval under the baseline (worse than always
    answering the majority class: a sign of a broken or untrained model, not of "nothing to learn").
    """
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    t = paired_t_interval(v, np.full(v.size, baseline), level)
    return {"mean": float(v.mean()) if v.size else None, "baseline": baseline, "seeds": int(v.size),
            "diff_ci": [t["lo"], t["hi"]], "learned": _learned(t), "below": _below(t)}


def _below(t: dict) -> bool:
    """Whole interval under the baseline (with no spread over seeds: every seed under it)."""
    if t.get("no_spread"):
        return t["diff"] < 0
    return t["hi"] is not None and t["hi"] < 0


def _learned(t: dict) -> bool | None:
    """Whole interval above the baseline; never when the mean is at or below it (a model that answers the
    majority class every time, with or without spread, one seed or several), else undetermined (one seed, or
    no spread over seeds above the baseline)."""
    if t["diff"] is None:
        return None
    if t["diff"] <= 0:
        return False
    # a mean above the baseline whose interval reaches it is undetermined, not "not learned": False made
    # `verdict` call two arms 28 points above chance "uninformative" and hide their paired difference
    return True if t["lo"] is not None and t["lo"] > 0 else None


def clamp_interval(lo: float | None, hi: float | None, bounds: tuple = DIFF_RANGE) -> tuple:
    """The interval cut to the values the quantity can take, and whether it had to be cut.

    Why: with 2 or 3 seeds the t quantile is large (12.7 at 2) and an interval like [-1.79, +1.38] for a
    difference of two accuracies says nothing a reader can use except "too few seeds"; the report shows the
    possible range and says it was cut rather than print numbers no difference can reach."""
    if lo is None or hi is None:
        return lo, hi, False
    cut = lo < bounds[0] or hi > bounds[1]
    return max(lo, bounds[0]), min(hi, bounds[1]), cut
