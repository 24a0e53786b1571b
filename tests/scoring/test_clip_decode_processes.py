"""clip_score with `decode_processes`: decode, preprocess and tokenise in spawned worker processes.

The pixels must be bit-identical to today's thread path: the worker's output (normalised here) equals open_clip's
full eval transform exactly, and a real two-process pool gives exactly the thread path's scores and
embeddings, broken images and missing synthetic captions included, whether the pixels come back through
shared memory (the default) or through the result pipe (when /dev/shm cannot hold the slots).
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
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


@pytest.fixture
def worker_state():
    """decode_pool's worker state, for running the worker's code in this process; the attached blocks closed after."""
    yield decode_pool._STATE
    for block in decode_pool._STATE.pop("blocks", {}).values():
        block.close()
    decode_pool._STATE.clear()


def test_worker_writes_pixels_into_the_lent_slot(worker_state):
    clip = load_clip("curate-tiny", device="cpu")
    split = split_preprocess(clip.preprocess)
    side = input_size(clip)
    blobs = _jpegs(5)  # five JPEGs and one broken blob
    texts = [f"caption {k}" for k in range(len(blobs))]
    decode_pool._init(split[0], clip.tokenizer, side)
    piped, ok, [(tokens, _)] = decode_pool.decode_in_worker(blobs, [texts])
    slots = decode_pool.PixelSlots(3, 6, (side, side, 3))
    try:
        first, second = slots.acquire(), slots.acquire()
        n, ok2, [(tokens2, _)] = decode_pool.decode_in_worker(blobs, [texts], second)
        assert n == 5 and ok2.tolist() == ok.tolist() and np.array_equal(tokens2, tokens)
        assert np.array_equal(slots.view(second, n), piped)  # the decodable images, in order, exactly
        assert not slots.view(first, 6).any()  # nothing spilled into the neighbouring slot
        small = decode_pool.Slot(second.name, second.index, second.offset, 4, second.shape)  # 5 images do not fit
        assert np.array_equal(decode_pool.decode_in_worker(blobs, [texts], small)[0], piped)
        wrong = decode_pool.Slot(second.name, second.index, second.offset, 6, (side + 1, side, 3))
        assert np.array_equal(decode_pool.decode_in_worker(blobs, [texts], wrong)[0], piped)
        slots.release(first)
        slots.release(second)
        assert slots.free == 3
    finally:
        slots.close()
    assert not os.path.exists(f"/dev/shm/{second.name.lstrip('/')}")


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or os.statvfs("/dev/shm").f_blocks == 0,
                    reason="needs a size-limited /dev/shm (Linux tmpfs)")
def test_slots_larger_than_dev_shm_fail_at_start_and_leave_nothing(caplog):
    """A block bigger than /dev/shm itself: tmpfs refuses the reservation up front (no pages are allocated),
    so the scorer falls back to the pipe with one warning instead of a worker dying of SIGBUS mid-write."""
    st = os.statvfs("/dev/shm")
    before = set(os.listdir("/dev/shm"))
    with caplog.at_level(logging.WARNING, logger="curate.scorers.decode_pool"):
        assert decode_pool.slots_for(1, 2, 1, (st.f_blocks * st.f_frsize, 1, 1)) is None
    assert "result pipe" in caplog.text and set(os.listdir("/dev/shm")) == before


def test_process_pool_scores_equal_thread_path(tiny_ckpt, monkeypatch):
    table = rows_table(9)
    imgs = table.column("image").to_pylist()
    imgs[3] = b"not a jpeg"
    table = table.set_column(table.column_names.index("image"), "image", pa.array(imgs, pa.binary()))
    recap = [None if i % 4 == 1 else f"synthetic {i}" for i in range(table.num_rows)]
    table = table.append_column("recaption", pa.array(recap, pa.string()))
    kw = dict(checkpoint=str(tiny_ckpt), device="cpu", batch_size=4, embeddings=True, text_col="both")
    threads = ClipScore(decode_threads=2, **kw).process(table)
    for shm in (True, False):
        stage = ClipScore(decode_processes=2, **kw)
        if not shm:  # as when /dev/shm cannot hold the slots (the test above): pixels through the pipe
            monkeypatch.setattr(decode_pool, "slots_for", lambda *a: None)
        try:
            procs = stage.process(table)
            assert stage._pool is not None  # the rows really went through the worker processes
            if shm:
                slots = stage._slots
                assert slots is not None and slots.free == slots.count  # every lent slot came back
                block = f"/dev/shm/{slots.shm.name.lstrip('/')}"
                assert os.path.exists(block)
        finally:
            stage.close()
        if shm:
            assert not os.path.exists(block)  # close() removed the shared memory
        for col in ("clip_score", "recaption_clip_score", "clip_image_embedding", "clip_text_embedding"):
            assert procs.column(col).to_pylist() == threads.column(col).to_pylist(), (col, shm)
    scores = threads.column("clip_score").to_pylist()
    assert scores[3] is None and sum(s is not None for s in scores) >= 6  # the broken image is unscored
    assert threads.column("recaption_clip_score").null_count > threads.column("clip_score").null_count


CRASH = b"kills the decoder"  # a blob the test's decoder segfaults on, as a native decoder bug would
_decode = decode_pool.decode_in_worker


def _decode_or_die(blobs, columns, slot=None):
    """decode_in_worker, except that the process dies of a real SIGSEGV on the CRASH blob."""
    if CRASH in blobs:
        import ctypes
        import faulthandler

        faulthandler.disable()  # (pytest's fault handler, inherited by the fork, would print a stack dump)
        ctypes.string_at(0)
    return _decode(blobs, columns, slot)


def test_a_decode_process_that_dies_fails_only_its_row_and_the_pool_is_replaced(tiny_ckpt, monkeypatch):
    table = rows_table(10)
    imgs = table.column("image").to_pylist()
    kw = dict(checkpoint=str(tiny_ckpt), device="cpu", batch_size=4, decode_processes=2)
    clean = ClipScore(**kw)
    try:
        expected = clean.process(table).column("clip_score").to_pylist()
    finally:
        clean.close()
    imgs[6] = CRASH
    table = table.set_column(table.column_names.index("image"), "image", pa.array(imgs, pa.binary()))
    monkeypatch.setattr(decode_pool, "decode_in_worker", _decode_or_die)  # the forked workers inherit it
    stage = ClipScore(**kw)
    try:
        out = stage.run(table)
        reasons, scores = out.column("reason").to_pylist(), out.column("clip_score").to_pylist()
        assert reasons[6] == "stage_error" and "decode process died" in out.column("error")[6].as_py()
        # every other row scored as without the crash (pixels from fresh pools and slots; the batches differ,
        # so float sums differ in the last bits, far below what a wrong pixel moves)
        keep = [i for i in range(10) if i != 6]
        assert np.allclose([scores[i] for i in keep], [expected[i] for i in keep], rtol=0, atol=1e-6)
        assert reasons[10:] == ["download_http_404"] * 3  # rows failed before stay as they were
        slots = stage._slots
        assert stage._pool is not None and slots.free == slots.count  # a working pool, every slot back
        again = stage.process(table.slice(0, 6))  # the stage goes on with the new pool
        assert np.allclose(again.column("clip_score").to_pylist(), expected[:6], rtol=0, atol=1e-6)
    finally:
        stage.close()
