"""clip_score's device_preprocess split (uint8 pixels to the device, float conversion + normalisation there)
must give exactly the tensor open_clip's full eval transform gives. Run here on the CPU device: the same
operations the GPU path runs (the GPU itself is measured by bench/gpu.py when one is lent)."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from curate.models.clip import load_clip
from curate.scorers.clip_score import decode_batch, normalise, split_preprocess


def _jpegs(n: int) -> list[bytes]:
    rng = np.random.default_rng(3)
    out = []
    for k in range(n):
        h, w = int(rng.integers(40, 130)), int(rng.integers(40, 130))  # odd shapes: resize and crop both act
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out + [b"not an image"]


def test_split_preprocess_gives_the_full_transform_exactly():
    clip = load_clip("curate-tiny", device="cpu")
    split = split_preprocess(clip.preprocess)
    assert split is not None, "open_clip's eval transform should end in ToTensor + Normalize"
    blobs = _jpegs(5)
    texts = [f"caption {k}" for k in range(len(blobs))]
    full, tok_full, ok_full = decode_batch(clip, blobs, texts, draft=True)
    raw, tok_raw, ok_raw = decode_batch(clip, blobs, texts, draft=True, pil_part=split[0])
    assert raw.dtype == torch.uint8 and raw.shape[-1] == 3
    assert ok_full.tolist() == ok_raw.tolist() == [True] * 5 + [False]
    assert torch.equal(tok_full, tok_raw)
    got = normalise(raw, split[1], split[2], "cpu")
    assert got.shape == full.shape and got.dtype == full.dtype
    assert torch.equal(got, full)


def test_split_preprocess_declines_other_transforms():
    from torchvision import transforms as T

    assert split_preprocess(lambda im: im) is None
    assert split_preprocess(T.Compose([T.ToTensor()])) is None
    assert split_preprocess(T.Compose([T.Resize(8), T.Normalize((0.5,), (0.5,)), T.ToTensor()])) is None
