"""clip_score `resize: torch`: the model's PIL resize + crop as torch uint8 ops.

Not PIL's arithmetic, so the claim is measured, not assumed: on noise JPEGs of odd shapes (up- and
down-scaled, the worst case for rounding) every pixel is within 2 levels of open_clip's own PIL transform
and fewer than 2% of values differ at all; the geometry (size, crop offsets) is the same. A preprocess with
a step torch cannot redo the same way keeps PIL, with a warning.
"""
from __future__ import annotations

import logging
import pickle

import numpy as np
import open_clip
import pytest

from curate.images import decode_rgb
from curate.scorers.clip_score import ClipScore, split_preprocess
from curate.scorers.tensor_resize import TensorResize, tensor_part

from .conftest import rows_table
from .test_clip_device_preprocess import _jpegs


@pytest.mark.parametrize("size,mode", [(224, "shortest"), (224, "squash"), (64, "shortest"), (61, "shortest")])
def test_torch_resize_is_within_two_levels_of_pil(size, mode):
    pil = split_preprocess(open_clip.image_transform(size, is_train=False, resize_mode=mode))[0]
    fast = tensor_part(pil)
    assert isinstance(fast, TensorResize)
    fast = pickle.loads(pickle.dumps(fast))  # as a spawned decode process (CUDA hosts) receives it
    images = [decode_rgb(b) for b in _jpegs(24)[:-1]]
    images.append(decode_rgb(_jpegs(1)[0]).convert("L").convert("RGB"))  # a grey source
    for im in images:
        want, got = np.asarray(pil(im)).astype(np.int16), fast(im).astype(np.int16)
        assert got.shape == want.shape == (size, size, 3)
        diff = np.abs(got - want)
        assert diff.max() <= 2 and (diff > 0).mean() < 0.02, (im.size, diff.max(), (diff > 0).mean())


def test_tensor_part_declines_steps_it_cannot_redo():
    from torchvision import transforms as T

    longest = split_preprocess(open_clip.image_transform(224, is_train=False, resize_mode="longest"))[0]
    assert tensor_part(longest) is None  # ResizeKeepRatio + CenterCropOrPad: open_clip's own PIL steps
    assert tensor_part(T.Compose([T.Resize(32), T.Lambda(lambda im: im)])) is None
    assert tensor_part(T.Compose([T.Grayscale(3)])) is None
    assert tensor_part(T.Compose([])) is None


def test_stage_with_torch_resize_scores_like_pil(tiny_ckpt, caplog):
    table = rows_table(12)
    kw = dict(checkpoint=str(tiny_ckpt), device="cpu", batch_size=5)
    pil = ClipScore(**kw).process(table).column("clip_score").to_numpy(zero_copy_only=False)
    fast_stage = ClipScore(resize="torch", **kw)
    fast = fast_stage.process(table).column("clip_score").to_numpy(zero_copy_only=False)
    assert isinstance(fast_stage._host[0], TensorResize)  # the torch path really ran
    scored = ~np.isnan(pil)
    assert scored.sum() == 12 and np.array_equal(scored, ~np.isnan(fast))
    assert np.abs(fast[scored] - pil[scored]).max() < 1e-3
    procs = ClipScore(resize="torch", decode_processes=2, **kw)  # the same torch ops in the worker processes
    try:
        got = procs.process(table).column("clip_score").to_numpy(zero_copy_only=False)
    finally:
        procs.close()
    assert np.array_equal(got[scored], fast[scored])
    with caplog.at_level(logging.WARNING, logger="curate.scorers.clip_score"):
        other = ClipScore(resize="torch", **kw)
        other.setup()
        other._clip.preprocess = open_clip.image_transform(64, is_train=False, resize_mode="longest")
        assert np.isfinite(other.process(table).column("clip_score").to_numpy(zero_copy_only=False)[scored]).all()
    assert "resizing with PIL" in caplog.text
