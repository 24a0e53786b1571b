"""Planted noise: kinds, default rates, assignment to sample ids, and the outcome a correct pipeline owes each.

Why ground truth per kind: tests and reports measure each stage's precision and recall against these
labels, so the vocabulary here and the reason codes in expected_outcome() are public API.
"""
from __future__ import annotations

import numpy as np

CLEAN = "clean"
DEFAULT_RATES: dict[str, float] = {
    "mismatched_caption": 0.08,
    "boilerplate_caption": 0.04,
    "exact_duplicate": 0.04,
    "near_duplicate": 0.04,
    "http_404": 0.03,
    "http_500": 0.02,
    "corrupt_bytes": 0.02,
    "truncated_bytes": 0.02,
    "tiny_image": 0.02,
    "extreme_aspect": 0.02,
    "slow_ok": 0.01,
    "timeout": 0.01,
    "flaky": 0.01,
}
NOISE_KINDS = (CLEAN, *DEFAULT_RATES)
DUPLICATES = ("exact_duplicate", "near_duplicate")
NO_IMAGE = ("http_404", "http_500", "corrupt_bytes")  # rows whose `label` is null

# What a correct pipeline does with each kind, under the reference settings: download with retries=0
# and timeout below the /slow/ delay, image_size filter (min_side 32, max_aspect 4), caption_text
# filter with boilerplate patterns, exact image dedup, perceptual (pHash) dedup keeping the earliest input
# row. (status, reason).
_OUTCOMES: dict[str, tuple[str, str | None]] = {
    CLEAN: ("ok", None),
    "mismatched_caption": ("ok", None),  # needs a CLIP-score stage to catch
    "boilerplate_caption": ("dropped", "caption_boilerplate"),
    "exact_duplicate": ("dropped", "duplicate_image"),
    "near_duplicate": ("dropped", "near_duplicate_image"),  # phash_dedup, keeping the earliest input row
    "http_404": ("failed", "download_http_404"),
    "http_500": ("failed", "download_http_500"),
    "corrupt_bytes": ("failed", "image_decode_error"),
    "truncated_bytes": ("failed", "image_truncated"),
    "tiny_image": ("dropped", "image_too_small"),
    "extreme_aspect": ("dropped", "image_aspect_ratio"),
    "slow_ok": ("ok", None),
    "timeout": ("failed", "download_timeout"),
    "flaky": ("failed", "download_http_500"),  # first request 500s; a retry would succeed
}


def expected_outcome(noise: str) -> tuple[str, str | None]:
    """(status, reason) a correct reference pipeline gives a sample of this noise kind; reason is None when kept."""
    try:
        return _OUTCOMES[noise]
    except KeyError:
        raise ValueError(f"unknown noise kind {noise!r}; known: {', '.join(NOISE_KINDS)}") from None


def counts_for(n: int, rates: dict[str, float] | None = None) -> dict[str, int]:
    """Exact number of samples per kind; every kind with a non-zero rate gets at least one when n >= 200."""
    rates = {**DEFAULT_RATES, **(rates or {})}
    unknown = set(rates) - set(DEFAULT_RATES)
    if unknown:
        raise ValueError(f"unknown noise kinds in rates: {sorted(unknown)}")
    counts = {k: int(round(r * n)) for k, r in rates.items()}
    if n >= 200:
        counts = {k: max(1, c) if rates[k] > 0 else c for k, c in counts.items()}
    noisy = sum(counts.values())
    if noisy > n - max(1, n // 10):
        raise ValueError(f"noise rates sum too high: {noisy} noisy of {n} samples")
    counts[CLEAN] = n - noisy
    return counts


def assign(n: int, rng: np.random.Generator, rates: dict[str, float] | None = None) -> list[str]:
    """Shuffle noise labels over ids so every duplicate has an earlier clean sample to copy."""
    labels = [k for k, c in counts_for(n, rates).items() for _ in range(c)]
    labels = [labels[i] for i in rng.permutation(n)]
    seen_clean = False
    for i in range(n):
        if labels[i] == CLEAN:
            seen_clean = True
        elif labels[i] in DUPLICATES and not seen_clean:
            j = labels.index(CLEAN, i + 1)
            labels[i], labels[j] = labels[j], labels[i]
            seen_clean = True
    return labels
