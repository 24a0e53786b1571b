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
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np

_STATE: dict[str, Any] = {}


def _init(transform, tokenizer, side: int | None) -> None:
    """Worker start: keep the transform and tokenizer; one intra-op thread (the pool is the parallelism)."""
    import torch

    torch.set_num_threads(1)
    _STATE.update(transform=transform, tokenizer=tokenizer, side=side)


def decode_in_worker(blobs: list[bytes], columns: list[list[str | None]]):
    """(pixels as a numpy array or None, ok mask, [(token ids as numpy or None, has-text mask)] per column).

    The same values `clip_score.decode_chunk` gives, as numpy arrays (cheap to pickle back)."""
    from curate.scorers.clip_score import decode_rows

    pix, ok = decode_rows(blobs, _STATE["transform"], _STATE["side"])
    pixels = np.stack([np.asarray(p) for p in pix]) if pix else None
    tok = _STATE["tokenizer"]
    texts = []
    for col in columns:
        present = np.array([t is not None for t, good in zip(col, ok) if good], bool)
        kept = [t for t, good in zip(col, ok) if good and t is not None]
        texts.append((tok(kept).numpy() if kept else None, present))
    return pixels, np.array(ok, bool), texts


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
