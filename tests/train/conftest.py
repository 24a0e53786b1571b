"""Fixtures for the validation-loop tests: tiny learnable shards and a tiny labelled eval set."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220), "yellow": (230, 220, 30),
           "purple": (150, 40, 190), "orange": (250, 140, 20), "black": (10, 10, 10), "white": (245, 245, 245)}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread is faster than two for the tiny model on this 2-core box, and leaves a core for the loader."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _jpg(rgb, rng) -> bytes:
    arr = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_colour_shards(root: Path, n: int, shards: int, seed: int = 0, labels: bool = True,
                        captions: bool = False) -> list[Path]:
    """Solid-colour images with captions naming the colour: learnable in a few dozen steps.

    `captions` adds a second correct caption per sample in the json's "captions" list."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    paths = []
    per = -(-n // shards)
    for s in range(shards):
        p = root / f"{s:06d}.tar"
        with tarfile.open(p, "w") as tf:
            for i in range(s * per, min(n, (s + 1) * per)):
                c = int(rng.integers(len(names)))
                add(tf, f"{i:06d}.jpg", _jpg(COLOURS[names[c]], rng))
                add(tf, f"{i:06d}.txt", f"a {names[c]} picture".encode())
                meta = {"label": names[c], "label_id": c} if labels else {"note": "no label"}
                if captions:
                    meta["captions"] = [f"a {names[c]} picture", f"something {names[c]}"]
                add(tf, f"{i:06d}.json", json.dumps(meta).encode())
        paths.append(p)
    return paths


def write_classes(root: Path) -> None:
    (root / "classes.json").write_text(json.dumps({"classnames": list(COLOURS), "templates": ["a {} picture"]}))


@pytest.fixture(scope="session")
def colour_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colour") / "train"
    write_colour_shards(root, 384, 4)
    return root


@pytest.fixture(scope="session")
def colour_eval(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colour") / "eval"
    write_colour_shards(root, 96, 1, seed=1)
    write_classes(root)
    return root


@pytest.fixture(scope="session")
def trained_tiny(colour_shards, tmp_path_factory) -> Path:
    """One 24-step curate-tiny run on colour_shards (logging every step), shared read-only by the tests that
    check the loss falls, the checkpoint loads in open_clip, and the trained model beats chance: training it
    once instead of per test saves about 25 s of suite time."""
    from curate.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "run"
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as the function-scoped _one_thread does for the tests themselves
    try:
        train(TrainConfig(shards=[str(colour_shards)], output=str(out), samples_seen=32 * 24, batch_size=32,
                          lr=2e-3, warmup=2, workers=0, log_every=1, shuffle_buffer=64))
    finally:
        torch.set_num_threads(old)
    return out
