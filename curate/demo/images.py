"""Procedural shape images for the demo corpus.

Why procedural: the corpus must be generated offline, deterministically, with exact ground truth
(what is in each image) so captions can be checked and an eval split can be labelled for free.
Images vary in shape, colour, count, size, position, background texture and canvas size so that a
small CLIP trained on them does not saturate on colour-by-shape alone.
"""
from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart")
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 35),
    "orange": (245, 135, 25),
    "purple": (135, 50, 175),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# Backgrounds are a separate, muted palette so the shape colour stays the salient one.
BACKGROUNDS = {
    "gray": (128, 128, 128),
    "beige": (225, 210, 175),
    "teal": (40, 120, 120),
    "navy": (30, 40, 90),
    "olive": (110, 110, 45),
    "pink": (235, 170, 190),
    "brown": (120, 75, 40),
    "sky": (150, 195, 235),
}
COUNTS = (1, 2, 3, 4)
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
TEXTURES = ("plain", "gradient", "noise", "stripes")
ATTRIBUTES = ("shape", "colour", "count", "size", "position", "texture", "background")

_SMALL = (0.15, 0.2)  # shape diameter as a fraction of the short side
_LARGE = (0.3, 0.36)
# `scale` (an optional attribute, default 1) multiplies the diameter: the held-out corpus draws bigger shapes so
# that shape, not only colour, is visible at a 32 px model input (curate.demo.heldout).
_MIN_CONTRAST = 110.0  # RGB distance between shape and background colour


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def sample_attributes(seed, **overrides) -> dict:
    """Draw a random attribute dict (content, canvas size, encoding); `overrides` pin any key."""
    rng = _rng(seed)
    a = {
        "shape": SHAPES[rng.integers(len(SHAPES))],
        "colour": list(COLOURS)[rng.integers(len(COLOURS))],
        "count": int(COUNTS[rng.integers(len(COUNTS))]),
        "position": POSITIONS[rng.integers(len(POSITIONS))],
        "texture": TEXTURES[rng.integers(len(TEXTURES))],
    }
    a.update({k: v for k, v in overrides.items() if k in a})
    if overrides.get("scale"):
        a["scale"] = float(overrides["scale"])
    # Large shapes only fit the half-canvas regions when there are at most two of them.
    a["size"] = overrides.get("size") or ("large" if a["count"] <= 2 and rng.random() < 0.5 else "small")
    if "background" in overrides:
        a["background"] = overrides["background"]
    else:
        fg = np.array(COLOURS[a["colour"]], float)
        ok = [b for b, rgb in BACKGROUNDS.items() if np.linalg.norm(fg - np.array(rgb)) >= _MIN_CONTRAST]
        a["background"] = ok[rng.integers(len(ok))]
    if "width" in overrides and "height" in overrides:
        a["width"], a["height"] = int(overrides["width"]), int(overrides["height"])
    else:
        side = int(rng.integers(96, 193))
        if rng.random() < 0.6:
            a["width"] = a["height"] = side
        else:  # aspect up to 2
            other = int(np.clip(side * rng.uniform(0.55, 1.0), 96, 192))
            a["width"], a["height"] = (side, other) if rng.random() < 0.5 else (other, side)
    a["format"] = overrides.get("format") or ("png" if rng.random() < 0.15 else "jpeg")
    a["quality"] = int(overrides.get("quality") or rng.integers(70, 96))
    return a


_NOISE: list[np.ndarray] = []


def _noise_field() -> np.ndarray:
    if not _NOISE:
        g = np.random.default_rng(20240601)
        lum = g.standard_normal((512, 512, 1)) * 22
        _NOISE.append((lum + g.standard_normal((512, 512, 3)) * 8).round().astype(np.int16))
    return _NOISE[0]


def _background(rng, w: int, h: int, rgb, texture: str) -> np.ndarray:
    """(h, w, 3) uint8 background; built from 1-D ramps and lookups because it dominates render time."""
    base = np.array(rgb, np.float32)
    if texture == "plain":
        return np.broadcast_to(base.astype(np.uint8), (h, w, 3)).copy()
    if texture == "gradient":
        horizontal = rng.random() < 0.5
        t = np.linspace(0, 1, w if horizontal else h, dtype=np.float32)[:, None]
        if rng.random() < 0.5:
            t = 1 - t
        ramp = np.clip(base * (0.55 + 0.45 * t) + (255 - base) * 0.35 * t, 0, 255).astype(np.uint8)
        return np.broadcast_to(ramp[None, :, :] if horizontal else ramp[:, None, :], (h, w, 3)).copy()
    if texture == "noise":  # a random window of a fixed noise field: drawing fresh normals per image is slow
        field = _noise_field()
        if h > field.shape[0] or w > field.shape[1]:
            field = np.tile(field, (-(-h // field.shape[0]), -(-w // field.shape[1]), 1))
        oy, ox = int(rng.integers(field.shape[0] - h + 1)), int(rng.integers(field.shape[1] - w + 1))
        arr = field[oy : oy + h, ox : ox + w] + base.astype(np.int16)
        return np.clip(arr, 0, 255).astype(np.uint8)
    if texture == "stripes":
        half = int(rng.integers(4, 11))
        lighter = base + (255 - base) * 0.35 if base.mean() < 150 else base * 0.7
        palette = np.stack([base, lighter]).clip(0, 255).astype(np.uint8)
        ys, xs = np.arange(h, dtype=np.int32), np.arange(w, dtype=np.int32)
        kind = int(rng.integers(4))
        if kind == 0:
            coord = np.broadcast_to(xs[None, :], (h, w))
        elif kind == 1:
            coord = np.broadcast_to(ys[:, None], (h, w))
        else:
            coord = np.add.outer(ys, xs if kind == 2 else -xs + w)
        return palette[(coord // half) % 2]
    raise ValueError(f"unknown texture {texture!r}")


def _polygon(kind: str, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
        pts = [(x * 1.1, y * 1.1) for x, y in pts]  # corners past r, so a square looks as big as a circle
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif kind == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif kind == "star":
        pts = [((1 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5 - math.pi / 2),
                (1 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5 - math.pi / 2)) for i in range(10)]
    elif kind == "cross":
        t, e = 0.32, 0.94  # arm ends stay inside the unit circle when rotated
        pts = [(-t, -e), (t, -e), (t, -t), (e, -t), (e, t), (t, t),
               (t, e), (-t, e), (-t, t), (-e, t), (-e, -t), (-t, -t)]
    elif kind == "diamond":
        pts = [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]
    elif kind == "heart":
        ts = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        xs = 16 * np.sin(ts) ** 3
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        pts = list(zip(xs / 17.0, (ys + 2.5) / 17.0))
    else:
        raise ValueError(f"unknown shape {kind!r}")
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


_MAX_ROT = {"square": 15, "triangle": 20, "hexagon": 30, "star": 36, "cross": 15, "diamond": 10, "heart": 15}


def _region(position: str, w: int, h: int) -> tuple[float, float, float, float]:
    m = 0.04 * min(w, h)
    return {
        "left": (m, m, 0.46 * w, h - m),
        "right": (0.54 * w, m, w - m, h - m),
        "top": (m, m, w - m, 0.46 * h),
        "bottom": (m, 0.54 * h, w - m, h - m),
        "center": (0.3 * w, 0.3 * h, 0.7 * w, 0.7 * h),
    }[position]


def _grid(count: int, rw: float, rh: float) -> tuple[int, int]:
    if count == 1:
        return 1, 1
    if count == 2:
        return (2, 1) if rw >= rh else (1, 2)
    if rw >= 2 * rh:
        return count, 1
    if rh >= 2 * rw:
        return 1, count
    return 2, 2


def render(seed, **overrides) -> tuple[Image.Image, dict]:
    """Render one image; returns (RGB PIL image, attribute dict). Same seed, same pixels."""
    rng = _rng(seed)
    a = sample_attributes(rng, **overrides)
    return draw(rng, a), a


def draw(seed, a: dict) -> Image.Image:
    """Draw the image a complete attribute dict describes; the seed only moves shapes and textures."""
    rng = _rng(seed)
    w, h = a["width"], a["height"]
    img = Image.fromarray(_background(rng, w, h, BACKGROUNDS[a["background"]], a["texture"]), "RGB")
    pen = ImageDraw.Draw(img)
    x0, y0, x1, y1 = _region(a["position"], w, h)
    cols, rows = _grid(a["count"], x1 - x0, y1 - y0)
    cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
    lo, hi = _SMALL if a["size"] == "small" else _LARGE
    d = min(rng.uniform(lo, hi) * a.get("scale", 1.0) * min(w, h), 0.85 * min(cw, ch))
    fg = tuple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in COLOURS[a["colour"]])
    cells = rng.permutation(cols * rows)[: a["count"]]
    for cell in sorted(cells.tolist()):
        cx = x0 + (cell % cols + 0.5) * cw + rng.uniform(-1, 1) * max(0.0, cw - 1.15 * d) / 2  # keep a gap
        cy = y0 + (cell // cols + 0.5) * ch + rng.uniform(-1, 1) * max(0.0, ch - 1.15 * d) / 2
        if a["shape"] == "circle":
            pen.ellipse([cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2], fill=fg)
        else:
            theta = math.radians(rng.uniform(-1, 1) * _MAX_ROT[a["shape"]])
            pen.polygon(_polygon(a["shape"], cx, cy, d / 2, theta), fill=fg)
    return img


def encode(img: Image.Image, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode to JPEG (baseline, no EXIF, so bytes depend only on pixels and quality) or PNG."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def ext_for(fmt: str) -> str:
    return "png" if fmt == "png" else "jpg"


def label_of(attrs: dict) -> str:
    """The class name used for zero-shot eval: "colour shape"."""
    return f"{attrs['colour']} {attrs['shape']}"


def classnames(colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES) -> list[str]:
    return [f"{c} {s}" for c in colours for s in shapes]
