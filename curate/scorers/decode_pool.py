"""clip_score's host side (JPEG decode, resize/crop, tokenise) in worker processes, so it scales with cores.

Why processes: in one process the host side is bound by the GIL (Pillow's Python-level open/load/convert,
numpy, open_clip's pure-Python tokenizer). On an H200 one process's decode threads peaked at ~0.9k img/s
on 15 threads against 12.7k img/s for the ViT-B-32 forward (bench/RESULTS.md, gpu-notes). Worker
processes each hold their own GIL; they return uint8 pixels (a quarter of float32's bytes through the
pipe) and int token ids, and the scoring process does ToTensor + Normalize on the model's device
(`clip_score.normalise`, bit-identical to the full transform on CPU).

The workers run the same code as the thread path (`clip_score.decode_rows`), with the transform and the
tokenizer handed to them once at start. Start method: spawn once CUDA is initialised (a forked CUDA
context is unusable), else fork, as torch's DataLoader does on Linux (a spawned worker re-imports torch,
torchvision and open_clip: ~10 CPU-s each on this machine). Each worker uses one torch thread: N
workers on N cores, not N x cores threads.

Pixels come back through shared memory (`PixelSlots`), not the result pipe: a 224 px chunk is 150 kB an
image, and pickling it, piping it and unpickling it cost the worker ~0.5 ms and the scoring process
~0.2 ms per image (bench/host_decode.py), which caps one scoring process at ~5k img/s however many
workers decode. A worker writes a chunk's pixels into a slot the scoring process lent it and returns
only the count; the scoring process reads them in place and frees the slot once they are on the model's
device. Where shared memory cannot be reserved (a small /dev/shm, as in a default Docker container) the
pixels go through the pipe as before, with one log line.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)
_STATE: dict[str, Any] = {}


class Slot(NamedTuple):
    """Where a worker writes one chunk's pixels: `rows` images of `shape` uint8 at `offset` of block `name`."""

    name: str
    index: int
    offset: int
    rows: int
    shape: tuple[int, int, int]


class PixelSlots:
    """`count` slots of `rows` x `shape` uint8 pixels in one shared-memory block, lent out one chunk at a time.

    Why a fixed pool: the scoring process keeps at most (batches in flight + 1) x chunks per batch
    outstanding, so that many slots never run out, and the block is reserved once (`os.posix_fallocate`,
    so a /dev/shm too small for it fails here with ENOSPC instead of a worker dying of SIGBUS mid-write).
    """

    def __init__(self, count: int, rows: int, shape: tuple[int, int, int]):
        self.rows, self.shape = rows, tuple(int(x) for x in shape)
        self.size = rows * math.prod(self.shape)
        self.shm = SharedMemory(create=True, size=max(1, count * self.size))
        try:
            _reserve(self.shm)
        except BaseException:
            self.close()
            raise
        self._free = collections.deque(range(count))
        self.count = count

    def acquire(self) -> Slot:
        i = self._free.popleft()  # IndexError only if a caller keeps more chunks outstanding than it sized for
        return Slot(self.shm.name, i, i * self.size, self.rows, self.shape)

    def view(self, slot: Slot, n: int) -> np.ndarray:
        """The first n images of `slot`, read in place (valid until the slot is released)."""
        return np.ndarray((n, *self.shape), np.uint8, self.shm.buf, slot.offset)

    def release(self, slot: Slot) -> None:
        self._free.append(slot.index)

    @property
    def free(self) -> int:
        return len(self._free)

    def close(self) -> None:
        """Unmap and remove the block (the workers' mappings go with their processes)."""
        with contextlib.suppress(Exception):
            self.shm.close()
        with contextlib.suppress(FileNotFoundError):
            self.shm.unlink()


def _reserve(shm: SharedMemory) -> None:
    """Allocate the block's pages now (Linux tmpfs), so running out of /dev/shm is an error here, not SIGBUS."""
    fd = getattr(shm, "_fd", -1)
    if fd >= 0 and hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, shm.size)


def slots_for(batches_in_flight: int, chunks: int, rows: int, shape: tuple[int, int, int]) -> PixelSlots | None:
    """Slots for a scorer keeping `batches_in_flight` batches of `chunks` chunks queued, or None (log once)
    when shared memory cannot hold them: the pixels then come back through the pipe."""
    try:
        return PixelSlots((batches_in_flight + 1) * chunks, rows, shape)
    except OSError as err:
        log.warning("decode processes: no shared memory for %d x %d images of %s (%s); pixels go through the "
                    "result pipe instead (slower; a larger /dev/shm fixes it)",
                    (batches_in_flight + 1) * chunks, rows, shape, err)
        return None


def _init(transform, tokenizer, side: int | None) -> None:
    """Worker start: keep the transform and tokenizer; one intra-op thread (the pool is the parallelism)."""
    import torch

    torch.set_num_threads(1)
    _STATE.update(transform=transform, tokenizer=tokenizer, side=side)


def decode_in_worker(blobs: list[bytes], columns: list[list[str | None]], slot: Slot | None = None):
    """(pixels, ok mask, [(token ids as numpy or None, has-text mask)] per column).

    The same values `clip_score.decode_chunk` gives, as numpy arrays (cheap to pickle back). pixels: the
    number of images written to `slot` when one was lent and they fit it, else a numpy array (or None)."""
    from curate.scorers.clip_score import decode_rows

    pix, ok = decode_rows(blobs, _STATE["transform"], _STATE["side"])
    arrays = [np.asarray(p) for p in pix]
    pixels = _into_slot(arrays, slot) if slot is not None else None
    if pixels is None:
        pixels = np.stack(arrays) if arrays else None
    tok = _STATE["tokenizer"]
    texts = []
    for col in columns:
        present = np.array([t is not None for t, good in zip(col, ok) if good], bool)
        kept = [t for t, good in zip(col, ok) if good and t is not None]
        texts.append((tok(kept).numpy() if kept else None, present))
    return pixels, np.array(ok, bool), texts


def _into_slot(arrays: list[np.ndarray], slot: Slot) -> int | None:
    """Write the images into the lent slot and return their count; None when they do not fit its shape."""
    if len(arrays) > slot.rows or any(a.shape != slot.shape or a.dtype != np.uint8 for a in arrays):
        return None
    blocks = _STATE.setdefault("blocks", {})
    if slot.name not in blocks:  # attached once per worker; the scoring process owns and removes it
        blocks[slot.name] = SharedMemory(name=slot.name)
    out = np.ndarray((slot.rows, *slot.shape), np.uint8, blocks[slot.name].buf, slot.offset)
    for i, a in enumerate(arrays):
        out[i] = a
    return len(arrays)


def start_method() -> str:
    """spawn when this process has a CUDA context (or fork is unavailable), else fork."""
    import multiprocessing
    import sys

    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    fork_ok = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    return "fork" if fork_ok and not cuda else "spawn"


def start(processes: int, transform, tokenizer, side: int | None, method: str | None = None) -> ProcessPoolExecutor:
    """A pool of `processes` workers holding `transform` (PIL part or full preprocess) and `tokenizer`."""
    return ProcessPoolExecutor(processes, mp_context=get_context(method or start_method()), initializer=_init,
                               initargs=(transform, tokenizer, side))
