"""Held-out noise: a second demo-corpus mode whose noise the shipped stages were never tuned on.

Why: the first demo corpus (curate.demo.noise) was written together with the filters, so it is
separable by construction (8-28 px thumbnails vs a 32 px threshold, boilerplate from the closed list
the regexes match). A claim about curation needs noise the stages never saw while they were written:
- graded caption mismatch: one attribute wrong (colour or shape), two wrong, or a caption about
  something unrelated (a template family of everyday scenes, not the shape templates);
- boilerplate from web vocabulary the regexes were not written for (shop, navigation, social, legal
  and id strings; tests check that no word of it is in curate.demo.captions' list or patterns);
- low resolution and wide aspect whose distributions overlap the clean data (short side 24-120 px vs
  clean 96-192; aspect 1.6-6 vs clean up to 2), so no threshold separates them exactly;
- near-duplicates that are harmful (an earlier clean image, exact or re-encoded, with a conflicting
  caption) and benign ones (the same image with another truthful caption).
Every planted row keeps its family (column `noise`) and grade (column `grade`) in corpus.parquet.

Shapes are drawn bigger (SHAPE_SCALE) in every split of this corpus, so shape, not only colour, is
visible at the 32 px input of the tiny models (issue 15 item 7).
"""
from __future__ import annotations

import numpy as np

from . import captions, images

CLEAN = "clean"
RATES: dict[str, float] = {
    "caption_one_wrong": 0.10,
    "caption_two_wrong": 0.06,
    "caption_unrelated": 0.04,
    "boilerplate_web": 0.05,
    "dup_conflicting": 0.04,
    "dup_benign": 0.04,
    "low_resolution": 0.05,
    "aspect_wide": 0.05,
}
FAMILIES = (CLEAN, *RATES)
DUPLICATES = ("dup_conflicting", "dup_benign")
HARMFUL = {f: f not in (CLEAN, "dup_benign") for f in FAMILIES}  # a benign duplicate only repeats a true pair
SHAPE_SCALE = 1.6

# Unrelated captions: everyday scenes, no colour or shape word of the demo vocabulary.
_SUBJECTS = ("a bowl of noodle soup", "an old bicycle", "a sleeping dog", "the city skyline", "a cup of coffee",
             "fresh strawberries", "a mountain lake", "two people hiking", "a wooden chair", "a vintage car",
             "a plate of pasta", "a cat on a sofa", "a crowded market", "a snowy forest", "a sailing boat",
             "a birthday cake", "an empty beach", "a stack of books", "a football match", "a tall lighthouse")
_SETTINGS = ("at sunset", "in the rain", "next to a window", "on a wooden table", "in the morning light",
             "during winter", "seen from above", "in a small village", "after the storm", "")
_LEADS = ("", "photograph of ", "close up of ", "a blurry shot of ", "my favourite: ", "travel diary - ")

# Boilerplate from web pages: a vocabulary disjoint from curate.demo.captions.BOILERPLATE_* (tests check).
_PRODUCTS = ("wall clock", "garden hose", "desk lamp", "phone case", "yoga mat", "coffee grinder", "rain jacket")
_BRANDS = ("Northwind", "Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Hooli")
_SITES = ("Facebook", "Pinterest", "Twitter", "Instagram", "LinkedIn")
_SECTIONS = ("Gallery", "Products", "Blog", "News", "Catalog", "Archive")
BOILERPLATE_WEB: dict[str, tuple[str, ...]] = {
    "commerce": ("Buy {product} online | Free shipping on orders over ${n}", "{product} - {pct}% off today only",
                 "Add to cart", "SKU {n}-{m}", "Ships within {k} business days", "Best price for {product}"),
    "navigation": ("Home › {section} › Page {k}", "Back to top", "Next slide", "slide {k} of {m}", "Menu",
                   "Read more »", "{section} | {brand}"),
    "social": ("Share on {site}", "Follow us on {site}", "Pin it", "{n} likes · {k} comments", "Tweet this"),
    "legal": ("© {year} {brand}. All rights reserved.", "Terms and conditions apply",
              "Sponsored content by {brand}", "Privacy policy"),
    "identifier": ("{hex12}", "asset_{hex6}_v{k}", "{hex8}-{hex4}-{hex4}", "upload-{n}-final-v{k}"),
}


def counts_for(n: int, rates: dict[str, float] | None = None) -> dict[str, int]:
    """Rows per family; every family with a non-zero rate gets at least one when n >= 200."""
    rates = {**RATES, **(rates or {})}
    unknown = set(rates) - set(RATES)
    if unknown:
        raise ValueError(f"unknown held-out noise families in rates: {sorted(unknown)}")
    counts = {k: int(round(r * n)) for k, r in rates.items()}
    if n >= 200:
        counts = {k: max(1, c) if rates[k] > 0 else c for k, c in counts.items()}
    if sum(counts.values()) > n // 2:
        raise ValueError(f"held-out noise rates sum too high: {sum(counts.values())} noisy of {n}")
    counts[CLEAN] = n - sum(counts.values())
    return counts


def assign(n: int, rng: np.random.Generator, rates: dict[str, float] | None = None) -> list[str]:
    """Families shuffled over ids so that every duplicate has an earlier clean row to copy."""
    labels = [k for k, c in counts_for(n, rates).items() for _ in range(c)]
    labels = [labels[i] for i in rng.permutation(n)]
    first_clean = labels.index(CLEAN)
    for i in range(first_clean):
        if labels[i] in DUPLICATES:  # the first duplicate trades places with the first clean row
            labels[i], labels[first_clean] = labels[first_clean], labels[i]
            break
    return labels


def _bucket(x: float, edges: tuple[float, ...], names: tuple[str, ...]) -> str:
    return names[int(np.searchsorted(edges, x, side="right"))]


def low_resolution_dims(rng: np.random.Generator) -> tuple[int, int, str]:
    """(width, height, grade): short side 24..120 px (clean: 96..192), aspect up to 1.5."""
    short = int(rng.integers(24, 121))
    long_ = int(short * rng.uniform(1.0, 1.5))
    w, h = (long_, short) if rng.random() < 0.5 else (short, long_)
    return w, h, "short_" + _bucket(short, (32, 64, 96), ("lt32", "32-63", "64-95", "ge96"))


def aspect_wide_dims(rng: np.random.Generator) -> tuple[int, int, str]:
    """(width, height, grade): aspect 1.6..6 (clean: up to 2), short side 64..128 px."""
    aspect = float(rng.uniform(1.6, 6.0))
    short = int(rng.integers(64, 129))
    long_ = min(int(short * aspect), 640)
    w, h = (long_, short) if rng.random() < 0.7 else (short, long_)
    return w, h, "aspect_" + _bucket(long_ / short, (2.0, 4.0), ("lt2", "2-4", "ge4"))


def _other(rng: np.random.Generator, values, current):
    pool = [v for v in values if v != current]
    return pool[int(rng.integers(len(pool)))]


def wrong_caption(attrs: dict, rng: np.random.Generator, wrong: tuple[str, ...]) -> str:
    """A shape-template caption with the named attributes (colour, shape) changed to other values."""
    a = dict(attrs)
    for k in wrong:
        a[k] = _other(rng, images.SHAPES if k == "shape" else tuple(images.COLOURS), a[k])
    return captions.caption(a, rng)


def unrelated_caption(rng: np.random.Generator) -> str:
    """A caption about an everyday scene: another template family, nothing about shapes."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    return f"{pick(_LEADS)}{pick(_SUBJECTS)} {pick(_SETTINGS)}".strip()


def boilerplate_web(rng: np.random.Generator) -> tuple[str, str]:
    """(text, grade): web boilerplate from a vocabulary the caption_text patterns were not written for."""
    grade = list(BOILERPLATE_WEB)[int(rng.integers(len(BOILERPLATE_WEB)))]
    templates = BOILERPLATE_WEB[grade]
    hexs = lambda k: "".join("0123456789abcdef"[int(x)] for x in rng.integers(16, size=k))  # noqa: E731
    fields = {"product": _PRODUCTS[int(rng.integers(len(_PRODUCTS)))], "brand": _BRANDS[int(rng.integers(len(_BRANDS)))],
              "site": _SITES[int(rng.integers(len(_SITES)))], "section": _SECTIONS[int(rng.integers(len(_SECTIONS)))],
              "n": int(rng.integers(10, 5000)), "m": int(rng.integers(10, 999)), "k": int(rng.integers(2, 9)),
              "pct": int(rng.integers(1, 8)) * 10, "year": int(rng.integers(2009, 2025)),
              "hex12": hexs(12), "hex8": hexs(8), "hex6": hexs(6), "hex4": hexs(4)}
    return templates[int(rng.integers(len(templates)))].format(**fields), grade


def caption_for(kind: str, attrs: dict, rng: np.random.Generator) -> tuple[str, str]:
    """(caption, grade) of a non-duplicate row of this family; duplicates are captioned by the generator."""
    if kind == "caption_one_wrong":
        which = ("colour", "shape")[int(rng.integers(2))]
        return wrong_caption(attrs, rng, (which,)), which
    if kind == "caption_two_wrong":
        return wrong_caption(attrs, rng, ("colour", "shape")), "colour+shape"
    if kind == "caption_unrelated":
        return unrelated_caption(rng), "other_domain"
    if kind == "boilerplate_web":
        return boilerplate_web(rng)
    return captions.caption(attrs, rng), ""
