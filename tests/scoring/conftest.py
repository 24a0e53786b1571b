"""Shared fixtures: a random-init curate-tiny saved as a checkpoint, and rows with real JPEG bytes."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def jpeg(rgb, size=(72, 56), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb, np.int16) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rows_table(n: int = 24) -> pa.Table:
    """n active rows with JPEG images and captions, plus failed rows without an image."""
    names = list(COLOURS)
    uids, imgs, texts, status, reason = [], [], [], [], []
    for i in range(n):
        c = names[i % len(names)]
        uids.append(f"u{i:03d}")
        imgs.append(jpeg(COLOURS[c], seed=i))
        texts.append(f"a {c} square" if i % 3 else f"a {names[(i + 1) % 4]} circle")
        status.append("ok")
        reason.append(None)
    for j in range(3):  # failed downloads: no image, must stay untouched
        uids.append(f"f{j}")
        imgs.append(None)
        texts.append("a failed sample")
        status.append("failed")
        reason.append("download_http_404")
    m = len(uids)
    return pa.table({"uid": uids, "part": pa.array([0] * m, pa.int32()), "row": pa.array(range(m), pa.int64()),
                     "text": texts, "image": pa.array(imgs, pa.binary()), "status": status,
                     "stage": [None if s == "ok" else "download" for s in status], "reason": reason,
                     "error": pa.nulls(m, pa.string())})


