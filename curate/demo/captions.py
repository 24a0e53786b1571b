"""Captions for the demo corpus: truthful templates and web-style boilerplate alt-text.

Why many templates: a caption filter or a CLIP model must not be able to key on one fixed sentence;
every template names the colour and the shape, so the "colour shape" label is always recoverable
from a clean caption. Boilerplate strings imitate the useless alt-text crawlers find, and
BOILERPLATE_PATTERNS matches all of them and none of the templates (tests check both).
"""
from __future__ import annotations

import re

import numpy as np

COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
TEXTURE_WORDS = {"plain": "plain", "gradient": "gradient", "noise": "noisy", "stripes": "striped"}

TEMPLATES = (
    "a photo of {count_word} {colour} {shapes} on a {texture} background",
    "{count} {colour} {shapes} {position}",
    "close-up of {a_size} {colour} {shape}",
    "{count_word} {size} {colour} {shapes} on {a_background} background",
    "a {texture} {background} background with {count_word} {colour} {shapes}",
    "{colour} {shapes} {position} of the picture",
    "an illustration of {count_word} {colour} {shapes}",
    "{count_word} {colour} {shapes}, {size}, {position}",
    "a simple drawing of {a_colour} {shape}",
    "{a_colour} {shape} pattern: {count_word} {size} {shapes} {position}",
    "clip art of {count_word} {colour} {shapes} on {a_background} background",
    "there {are} {count_word} {colour} {shapes} {position}",
    "{count_word} {size} {colour} {shapes} drawn on a {texture} {background} backdrop",
    "graphic showing {colour} {shapes} {position}",
    "{a_colour} {shape} icon",
    "a minimal poster with {count_word} {colour} {shapes}",
    "flat {colour} {shapes} ({count}) over a {texture} background",
    "{size} {colour} {shapes} placed {position}",
    "geometric art: {count_word} {colour} {shapes} on {background}",
    "{a_background} {texture} background and {count_word} {size} {colour} {shapes} {position}",
    "the {colour} {shape} shape, {count} in total",
    "a picture of {count_word} {colour} {shapes}",
    "{count_word} {colour} {shapes} against {a_background} background",
    "vector image of {a_size} {colour} {shape} {position}",
)

BOILERPLATE_FIXED = (
    "click here", "image", "photo", "untitled", "Download now", "thumbnail", "picture", "img",
    "Click to enlarge", "no description available", "placeholder", "logo", "banner", "default image",
    "Image not found", "view image", "stock photo", "untitled-1",
)
BOILERPLATE_PATTERNS = (
    r"^(img|dsc|dscn|dcim|pxl|p)[_-]?\d{2,8}[^ ]*\.(jpe?g|png|gif|webp)$",
    r"^(image|img|photo|picture|pic|thumbnail|thumb|untitled|logo|banner|placeholder)([ _-]?\d+)?$",
    r"^(click here|click to enlarge|download now|view image|default image|image not found|stock photo)$",
    r"^(no description available|screenshot[ _]\d{4}-\d{2}-\d{2}.*)$",
)
_BOILER_RE = [re.compile(p, re.IGNORECASE) for p in BOILERPLATE_PATTERNS]


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def fields(attrs: dict) -> dict:
    """Template fields derived from an attribute dict (shape, colour, count, size, position, texture, background)."""
    n = int(attrs["count"])
    shape = attrs["shape"]
    return {
        "shape": shape,
        "shapes": shape if n == 1 else plural(shape),
        "colour": attrs["colour"],
        "a_colour": _article(attrs["colour"]),
        "count": n,
        "count_word": COUNT_WORDS[n],
        "are": "is" if n == 1 else "are",
        "size": attrs["size"],
        "a_size": _article(attrs["size"]),
        "position": POSITION_PHRASES[attrs["position"]],
        "texture": TEXTURE_WORDS[attrs["texture"]],
        "background": attrs["background"],
        "a_background": _article(attrs["background"]),
    }


# Templates that name a single shape without a count are only true when count == 1.
SINGULAR = tuple(i for i, t in enumerate(TEMPLATES) if "{shape}" in t and "{count" not in t)
_PLURAL_OK = tuple(i for i in range(len(TEMPLATES)) if i not in SINGULAR)


def caption(attrs: dict, rng: np.random.Generator, template: int | None = None) -> str:
    """A truthful caption for `attrs` from a random (or the given) template."""
    if template is None:
        pool = range(len(TEMPLATES)) if int(attrs["count"]) == 1 else _PLURAL_OK
        template = pool[int(rng.integers(len(pool)))]
    return TEMPLATES[template].format(**fields(attrs))


def boilerplate(rng: np.random.Generator) -> str:
    """A useless alt-text of the kind crawlers find (file names, calls to action, generic words)."""
    r = rng.random()
    if r < 0.35:
        prefix = ["IMG_", "DSC_", "DSCN", "IMG-", "PXL_"][int(rng.integers(5))]
        ext = [".jpg", ".JPG", ".jpeg", ".png"][int(rng.integers(4))]
        return f"{prefix}{int(rng.integers(10000)):04d}{ext}"
    if r < 0.42:
        y, m, d = int(rng.integers(2015, 2025)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        return f"screenshot {y}-{m:02d}-{d:02d}"
    if r < 0.5:
        return f"{['image', 'photo', 'picture', 'thumbnail'][int(rng.integers(4))]}{int(rng.integers(1, 100))}"
    return BOILERPLATE_FIXED[int(rng.integers(len(BOILERPLATE_FIXED)))]


def is_boilerplate(text: str) -> bool:
    """Reference check a caption filter can be compared against."""
    t = (text or "").strip()
    return not t or any(p.match(t) for p in _BOILER_RE)
