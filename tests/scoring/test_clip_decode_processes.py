"""clip_score with `decode_processes`: decode, preprocess and tokenise in spawned worker processes.

The pixels must be bit-identical to today's thread path: the worker's output (normalised here) equals open_clip's
full eval transform exactly, and a real two-process pool gives exactly the thread path's scores and
embeddings, broken images and missing synthetic captions included.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from curate.models.clip import load_clip
from curate.scorers import decode_pool
from curate.scorers.clip_score import ClipScore, decode_batch, input_size, normalise, split_preprocess

from .conftest import rows_table
from .test_clip_device_preprocess import _jpegs


def test_worker_output_is_the_full_transform_exactly():
    clip = load_clip("curate-tiny", device="cpu")
    split = split_preprocess(clip.preprocess)
    blobs = _jpegs(5)
    texts = [f"caption {k}" for k in range(len(blobs))]
    decode_pool._init(split[0], clip.tokenizer, input_size(clip))  # the worker's start, in this process
    pixels, ok, [(tokens, present)] = decode_pool.decode_in_worker(blobs, [texts])
    full, tok_full, ok_full = decode_batch(clip, blobs, texts, draft=True)
    assert pixels.dtype == np.uint8 and ok.tolist() == ok_full.tolist() == [True] * 5 + [False]
    assert torch.equal(normalise(torch.from_numpy(pixels), split[1], split[2], "cpu"), full)
    assert torch.equal(torch.from_numpy(tokens), tok_full) and present.all()


def test_process_pool_scores_equal_thread_path(tiny_ckpt):
    table = rows_table(9)
    imgs = table.column("image").to_pylist()
    imgs[3] = b"not a jpeg"
    table = table.set_column(table.column_names.index("image"), "image", pa.array(imgs, pa.binary()))
    recap = [None if i % 4 == 1 else f"synthetic {i}" for i in range(table.num_rows)]
    table = table.append_column("recaption", pa.array(recap, pa.string()))
    kw = dict(checkpoint=str(tiny_ckpt), device="cpu", batch_size=4, embeddings=True, text_col="both")
    threads = ClipScore(decode_threads=2, **kw).process(table)
    stage = ClipScore(decode_processes=2, **kw)
    try:
        procs = stage.process(table)
        assert stage._pool is not None  # the rows really went through the worker processes
    finally:
        stage.close()
    for col in ("clip_score", "recaption_clip_score", "clip_image_embedding", "clip_text_embedding"):
        assert procs.column(col).to_pylist() == threads.column(col).to_pylist(), col
    scores = threads.column("clip_score").to_pylist()
    assert scores[3] is None and sum(s is not None for s in scores) >= 6  # the broken image is unscored
    assert threads.column("recaption_clip_score").null_count > threads.column("clip_score").null_count
