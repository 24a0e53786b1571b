"""Clean labelled splits as WebDataset tars: `eval/` (zero-shot and attribute eval) and `seed/` (filter training).

Why separate streams: both use the corpus renderer but their own random streams, so no eval image is
a copy of a corpus image. Eval classes are balanced (class = index mod #classes) so accuracy is
stable even on a few hundred samples. Tars are written with tarfile (mtime 0, sorted members) so they
are byte-deterministic for a seed.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from . import captions, images

EVAL_STREAM, SEED_STREAM = 101, 202
SAMPLES_PER_TAR = 10_000
CLIP_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "an illustration of a {}.",
    "a {} on a background.",
    "a simple image of a {}.",
    "a rendering of a {}.",
    "clip art of a {}.",
)


def composition(a: dict) -> str:
    """Harder class name: count, colour and shape together, e.g. "two red circles"."""
    n = int(a["count"])
    shapes = a["shape"] if n == 1 else captions.plural(a["shape"])
    return f"{captions.COUNT_WORDS[n]} {a['colour']} {shapes}"


def attribute_tasks() -> list[dict]:
    """Zero-shot tasks beyond colour-by-shape: values[i] (the json field's value) pairs with classnames[i]."""
    shapes_tpl = ["a photo of {}.", "an image with {}.", "{}."]
    comps = [composition({"count": c, "colour": col, "shape": s}) for c in images.COUNTS for col in images.COLOURS
             for s in images.SHAPES]
    return [
        {"name": "shape", "values": list(images.SHAPES), "classnames": list(images.SHAPES),
         "templates": ["a photo of a {}.", "a {} shape.", "a drawing of a {}."]},
        {"name": "colour", "values": list(images.COLOURS), "classnames": [f"{c} shapes" for c in images.COLOURS],
         "templates": shapes_tpl},
        {"name": "count", "values": list(images.COUNTS),
         "classnames": [f"{captions.COUNT_WORDS[c]} shape{'s' if c > 1 else ''}" for c in images.COUNTS],
         "templates": shapes_tpl},
        {"name": "size", "values": list(images.SIZES), "classnames": [f"{s} shapes" for s in images.SIZES],
         "templates": shapes_tpl},
        {"name": "position", "values": list(images.POSITIONS),
         "classnames": [f"shapes {captions.POSITION_PHRASES[p]}" for p in images.POSITIONS], "templates": shapes_tpl},
        {"name": "texture", "values": list(images.TEXTURES),
         "classnames": [f"shapes on a {captions.TEXTURE_WORDS[t]} background" for t in images.TEXTURES],
         "templates": shapes_tpl},
        {"name": "background", "values": list(images.BACKGROUNDS),
         "classnames": [f"shapes on a {b} background" for b in images.BACKGROUNDS], "templates": shapes_tpl},
        {"name": "composition", "values": comps, "classnames": comps, "templates": shapes_tpl},
    ]


def sample_json(a: dict, classnames: list[str]) -> dict:
    label = images.label_of(a)
    out = {"label": label, "label_id": classnames.index(label)}
    out.update({k: a[k] for k in images.ATTRIBUTES})
    out.update(composition=composition(a), width=a["width"], height=a["height"])
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def render_sample(job: tuple) -> tuple[bytes, bytes, bytes]:
    """(jpg, txt, json) bytes of split sample k; a top-level function so a process pool can run it."""
    seed, stream, k, balanced, *style = job
    names = images.classnames()
    rng = np.random.default_rng([seed, stream, k])
    pin = dict(zip(("colour", "shape"), names[k % len(names)].split(" "))) if balanced else {}
    img, a = images.render(rng, format="jpeg", **pin, **(style[0] if style else {}))
    meta = json.dumps(sample_json(a, names), sort_keys=True).encode()
    return images.encode(img, "jpeg", a["quality"]), captions.caption(a, rng).encode(), meta


def write_split(out_dir: Path, n: int, seed: int, stream: int, balanced: bool, pmap=map,
                style: dict | None = None) -> list[str]:
    """Render n clean samples into out_dir/000000.tar, ...; returns the tar paths. pmap may be a pool's map.

    `style`: attribute overrides for every sample (e.g. {"scale": 1.8}, the held-out corpus' bigger shapes).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tars, tar = [], None
    samples = pmap(render_sample, [(seed, stream, k, balanced, style or {}) for k in range(n)])
    for k, (jpg, txt, meta) in enumerate(samples):
        if k % SAMPLES_PER_TAR == 0:
            if tar is not None:
                tar.close()
            tars.append(str(out_dir / f"{k // SAMPLES_PER_TAR:06d}.tar"))
            tar = tarfile.open(tars[-1], "w", format=tarfile.USTAR_FORMAT)
        key = f"{k:06d}"
        _add(tar, f"{key}.jpg", jpg)
        _add(tar, f"{key}.txt", txt)
        _add(tar, f"{key}.json", meta)
    if tar is not None:
        tar.close()
    return tars


def write_classes(path: Path) -> None:
    """eval/classes.json: class names (label_id order), CLIP prompt templates, attribute tasks."""
    doc = {"classnames": images.classnames(), "templates": list(CLIP_TEMPLATES), "attributes": attribute_tasks()}
    path.write_text(json.dumps(doc, indent=1))
