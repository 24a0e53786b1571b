"""`clip_score`: cosine similarity between a sample's image and its caption under an open_clip model.

Why a stage of its own: scoring is the expensive part (a model forward per image) and the decision is
cheap, so scores are stored (`clip_score` column, and optionally the L2-normalised embeddings in the
`embeddings/` sidecar) and the keep/drop decision is a separate filter (`clip_threshold`,
`clip_top_fraction`) that `curate refilter` can redo without the model.

Runs on a long-lived actor (`uses_model`): the model loads once per actor, on the GPU when the recipe
gives the stage `num_gpus`, bf16/fp16 autocast there. JPEG decode, preprocessing and tokenisation run on
a thread pool one batch ahead of the model (PIL decode and torch ops release the GIL), so on a CPU the
model's forward pass is the bottleneck, not the decoder. On a GPU the threads stop at uint8 pixels (decode,
resize, crop in PIL) and the float conversion and normalisation run on the device (`device_preprocess`): a
quarter of the bytes cross the bus, and each thread does less per image; the result is the same tensor the
full transform gives. Even so, one process's decode threads do not feed a large GPU: on an H200 the host side
peaked at ~0.9k img/s on 15 threads (the GIL) against 12.7k img/s for ViT-B-32 (bench/RESULTS.md, gpu-notes).
`decode_processes: N` moves that host work into N worker processes (curate.scorers.decode_pool), each with
its own GIL, so it scales with cores; the pixels and tokens are the same as the threads' (uint8, normalised
on the model's device; tests/scoring/test_clip_decode_processes.py). The pixels come back through
shared-memory slots, not the result pipe, so the scoring process does not pay for them per byte.

Which caption (`text_col`, for CapFilt): `text` (the original, column `clip_score`), `recaption` (the
synthetic caption, column `recaption_clip_score`) or `both` (both columns from one image forward pass).
A row without a synthetic caption gets a null `recaption_clip_score`; a null original text is scored as "".
"""
from __future__ import annotations

import collections
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr, model_validator

from curate.models.clip_settings import ClipWeights
from curate.scorers import decode_pool
from curate.scorers.caption_columns import PerConfig, TextCol, captions, score_column
from curate.stage import Annotations, Stage, register

log = logging.getLogger(__name__)
# batches queued ahead of the model with decode processes; the shared-memory slots are sized from it
PROCESS_DEPTH = 2
EMBEDDING = pa.list_(pa.float32())
IMAGE_EMBEDDING, TEXT_EMBEDDING = "clip_image_embedding", "clip_text_embedding"


def input_size(clip) -> int:
    size = getattr(clip.model.visual, "image_size", 224)
    return int(max(size) if isinstance(size, (tuple, list)) else size)


def split_preprocess(preprocess):
    """(PIL part, mean, std) when `preprocess` ends in ToTensor + Normalize (open_clip's eval transform), else None.

    Why: the PIL part (resize, crop, RGB) is what must run on the host; the last two steps are plain
    arithmetic that `normalise` does on the model's device with the same operations.
    """
    from torchvision.transforms import Compose, Normalize, ToTensor

    steps = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, Compose) or not steps or len(steps) < 2:
        return None
    if not isinstance(steps[-2], ToTensor) or not isinstance(steps[-1], Normalize):
        return None
    return Compose(steps[:-2]), tuple(steps[-1].mean), tuple(steps[-1].std)


def normalise(pixels, mean, std, device: str):
    """ToTensor + Normalize of an (N, H, W, 3) uint8 batch, on `device`: the (N, 3, H, W) float tensor
    the full transform gives (same operations, in the same order, in float32)."""
    import torch

    x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div(255)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def decode_rows(blobs: list[bytes], transform, side: int | None) -> tuple[list, list[bool]]:
    """(transform(image) per decodable blob, ok per blob): the per-image host work, shared by the decode
    threads and the decode processes (curate.scorers.decode_pool), so both give the same pixels.
    side: JPEG draft decoding at the smallest DCT scale that covers it (None: full size)."""
    from curate.images import decode_rgb

    pix, ok = [], []
    for blob in blobs:
        try:
            pix.append(transform(decode_rgb(blob, draft=side or None)))
            ok.append(True)
        except Exception:  # noqa: BLE001 - a broken image gets no score; the run goes on
            ok.append(False)
    return pix, ok


def decode_batch(clip, blobs: list[bytes], texts: list[str], draft: bool = False, pil_part=None):
    """(pixel tensor, token tensor, ok mask) for one batch; undecodable images are masked out, not raised.
    The tokens are those of `texts` at the decodable rows.

    draft: let libjpeg decode at a reduced DCT scale that still covers the model's input size (PIL's
    `Image.draft`), so a 512 px JPEG scored at 224 px is not decoded at full size first.
    pil_part: the host half of `split_preprocess`; then the pixels are an (N, H, W, 3) uint8 tensor for
    `normalise` (pinned when CUDA is there, so the copy to the GPU is asynchronous).
    """
    import torch

    pix, ok = decode_rows(blobs, (lambda im: np.asarray(pil_part(im))) if pil_part is not None else clip.preprocess,
                          input_size(clip) if draft else None)
    pixels = None
    if pix and pil_part is not None:
        pixels = torch.from_numpy(np.stack(pix))
        if torch.cuda.is_available():
            pixels = pixels.pin_memory()
    elif pix:
        pixels = torch.stack(pix)
    tokens = clip.tokenizer([t for t, good in zip(texts, ok) if good]) if pix else None
    return pixels, tokens, np.array(ok, bool)


def decode_chunk(clip, blobs: list[bytes], columns: list[list[str | None]], draft: bool = False, pil_part=None):
    """`decode_batch` for several caption columns: (pixels, ok mask, [(tokens, has-text mask)] per column).

    A column's tokens cover the decodable rows whose caption is not None (the has-text mask, over the
    decodable rows), so a row without a synthetic caption costs no text forward and gets no score.
    """
    pixels, _, ok = decode_batch(clip, blobs, [""] * len(blobs), draft, pil_part)
    texts = []
    for col in columns:
        present = np.array([t is not None for t, good in zip(col, ok) if good], bool)
        kept = [t for t, good in zip(col, ok) if good and t is not None]
        texts.append((clip.tokenizer(kept) if kept else None, present))
    return pixels, ok, texts


@register
class ClipScore(ClipWeights, Stage):
    """Score image-caption agreement: cosine similarity of open_clip image and text embeddings."""

    name: ClassVar[str] = "clip_score"
    checkpoint_hint: ClassVar[str] = (" (train one with `curate train` or examples/filter_bootstrap/train_filter.py; "
                                      "`curate demo` builds the demo's)")
    reads: ClassVar[tuple[str, ...]] = ("image",)
    writes: ClassVar[dict[str, pa.DataType]] = PerConfig(  # type: ignore[assignment]
        {"clip_score": pa.float32(), "recaption_clip_score": pa.float32(),
         IMAGE_EMBEDDING: EMBEDDING, TEXT_EMBEDDING: EMBEDDING},
        lambda self: {**{score_column("clip_score", c): pa.float32() for c in captions(self.text_col)},
                      **({IMAGE_EMBEDDING: EMBEDDING, TEXT_EMBEDDING: EMBEDDING} if self.text_col != "recaption"
                         else {})})
    uses_model: ClassVar[bool] = True

    model: str | None = None  # open_clip name (ViT-B-32, curate-tiny, ...); read from `checkpoint` if omitted; else needs pretrained (or random_init: true)
    pretrained: str | None = None  # hub tag (laion2b_s34b_b79k, openai), loaded from the local hub cache
    checkpoint: str | None = None  # checkpoint file or URL (OUT/checkpoint.pt from `curate train`, s3://b/filter.pt)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # autocast on GPU; CPU always fp32
    batch_size: int = Field(256, ge=1)  # images per CLIP forward pass; lower it when GPU memory runs out
    decode_threads: int = Field(2, ge=1)  # threads decoding/preprocessing the next batch
    decode_processes: int = Field(0, ge=0)  # >0: decode/preprocess/tokenise in N worker processes (GPU hosts: cores - 1; give the stage num_cpus to match)
    embeddings: bool = False  # also keep the L2-normalised image/text embeddings (embeddings/ sidecar)
    fast_decode: bool = True  # JPEG draft decoding at the smallest scale that covers the model's input
    device_preprocess: bool = True  # on a GPU: uint8 pixels to the device, float conversion + normalisation there
    text_col: TextCol = "text"  # text -> clip_score, recaption -> recaption_clip_score, both -> both columns
    resize: Literal["pil", "torch"] = "pil"  # torch: resize/crop as uint8 torch ops (~3x cheaper; pixels within 2 levels of PIL's)

    _clip: Any = PrivateAttr(default=None)
    _pool: Any = PrivateAttr(default=None)
    _slots: Any = PrivateAttr(default=None)
    _host: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_columns(self):
        """(The weights are checked by ClipWeights at recipe load.) Refuse embeddings without the caption
        they embed."""
        if self.embeddings and self.text_col == "recaption":
            raise ValueError("embeddings: true stores the original caption's text embedding; "
                             "use text_col: both (or a clip_score with text_col: text) to keep them")
        return self

    def needs(self) -> tuple[str, ...]:
        return ("image", "recaption") if self.text_col != "text" else self.reads

    def setup(self) -> None:
        if self._clip is None:
            self._clip = self.load_clip()

    def _decode_pool(self, transform, clip, uint8: bool):
        """(worker processes, shared-memory pixel slots or None), started once per stage object (once per
        actor) and kept. Slots only for uint8 pixels: the scorer keeps PROCESS_DEPTH batches of N chunks ahead."""
        if self._pool is None:
            side = input_size(clip)
            if uint8:  # before the pool: its workers share this process's resource tracker
                self._slots = decode_pool.slots_for(PROCESS_DEPTH, self.decode_processes,
                                                    -(-self.batch_size // self.decode_processes), (side, side, 3))
            self._pool = decode_pool.start(self.decode_processes, transform, clip.tokenizer,
                                           side if self.fast_decode else None)
        return self._pool, self._slots

    def _host_part(self, pil_part):
        """The host half of the preprocess: `pil_part` itself, or its torch version with `resize: torch`
        (PIL, with one warning, when the model's preprocess has a step torch cannot redo the same way)."""
        if self.resize != "torch":
            return pil_part
        if self._host is None:  # decided once per stage object: a 1-tuple, so "no split" is remembered too
            from curate.scorers.tensor_resize import tensor_part

            fast = tensor_part(pil_part) if pil_part is not None else None
            if fast is None:
                log.warning("clip_score resize: torch: the model's preprocess %s has steps torch cannot redo "
                            "the same way; resizing with PIL", pil_part or self._clip.preprocess)
            self._host = (fast or pil_part,)
        return self._host[0]

    def _settle(self, pending) -> None:
        """After a batch loop that did not finish (an error, or a decode process that died): wait for the chunks
        still queued, so no worker writes into a slot after it is lent again, and give their slots back. A
        pool with a dead process is unusable (concurrent.futures marks it broken): close it, and the next
        call starts a new one. Nothing to do after a loop that finished (every chunk was released)."""
        broken = False
        for done in pending:
            for f, slot in done:
                broken |= isinstance(f.exception(), BrokenProcessPool)  # waits for the chunk
                if slot is not None and self._slots is not None:
                    self._slots.release(slot)
            done.clear()
        if broken or (self._pool is not None and getattr(self._pool, "_broken", False)):
            self.close()

    def close(self) -> None:
        """Stop the decode processes (they also end with the process that started them), free the slots."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._slots is not None:
            self._slots.close()
            self._slots = None

    def score(self, images: list[bytes], texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores with NaN for undecodable images, image embeddings, text embeddings) in input order."""
        scores, ie, te = self.score_columns(images, [texts])
        return scores[0], ie, te[0]

    def score_columns(self, images: list[bytes], columns: list[list[str | None]]):
        """Score each image against each caption column with one image forward pass per image.

        Returns ([scores per column], image embeddings, [text embeddings per column]), in input order;
        a score is NaN (and its embedding zero) where the image does not decode or the caption is None.
        """
        import torch

        self.setup()
        clip, n, bs, k = self._clip, len(images), self.batch_size, len(columns)
        dim = clip.dim
        scores = [np.full(n, np.nan, np.float32) for _ in range(k)]
        img_emb = np.zeros((n, dim), np.float32)
        txt_emb = [np.zeros((n, dim), np.float32) for _ in range(k)]
        starts = list(range(0, n, bs))
        procs = self.decode_processes
        on_gpu = clip.device.startswith("cuda")
        # processes always return uint8 pixels (normalised here: bit-identical on CPU, a quarter of the bytes)
        uint8 = (self.device_preprocess and on_gpu) or procs or self.resize == "torch"
        split = split_preprocess(clip.preprocess) if uint8 else None
        pil_part = self._host_part(split[0] if split else None)
        parts, depth = (procs, PROCESS_DEPTH) if procs else (self.decode_threads, 1)  # chunks/batch, batches ahead
        with contextlib.ExitStack() as stack:
            if procs:
                pool, slots = self._decode_pool(pil_part or clip.preprocess, clip, pil_part is not None)

                def chunk(a: int, b: int):  # (future, the shared-memory slot lent for its pixels or None)
                    slot = slots.acquire() if slots else None
                    try:
                        return pool.submit(decode_pool.decode_in_worker, images[a:b],
                                           [col[a:b] for col in columns], slot), slot
                    except BaseException as err:  # a pool that a dead process broke refuses new work
                        if slot is not None:
                            slots.release(slot)
                        raise DecodeProcessDied() if isinstance(err, BrokenProcessPool) else err
            else:
                threads, slots = stack.enter_context(ThreadPoolExecutor(self.decode_threads)), None

                def chunk(a: int, b: int):
                    return threads.submit(decode_chunk, clip, images[a:b], [col[a:b] for col in columns],
                                          self.fast_decode, pil_part), None

            # split each batch over the decode workers; keep the next batch(es) in flight while the model runs
            # (the chunks of a batch go into `pending` as they are queued, so _settle sees each one)
            pending: collections.deque[list] = collections.deque()
            if procs:  # whatever stops the loop, no worker may still write into a slot that is lent again
                stack.callback(self._settle, pending)

            def submit(lo: int) -> None:
                hi = min(n, lo + bs)
                step = -(-(hi - lo) // parts)
                pending.append(batch := [])
                for a in range(lo, hi, step):
                    batch.append(chunk(a, min(hi, a + step)))

            for lo in starts[:depth]:
                submit(lo)
            for b, lo in enumerate(starts):
                done = pending[0]
                chunks = [_result(f) for f, _ in done]
                if b + depth < len(starts):
                    submit(starts[b + depth])
                if procs:
                    chunks = [_to_torch(c, on_gpu, slots, slot) for c, (_, slot) in zip(chunks, done)]
                ok = np.concatenate([c[1] for c in chunks])
                if not ok.any():
                    pixels = None
                elif split:  # each chunk goes to the device as uint8 and is normalised there
                    pixels = torch.cat([normalise(c[0], split[1], split[2], clip.device)
                                        for c in chunks if c[0] is not None])
                else:
                    pixels = torch.cat([c[0] for c in chunks if c[0] is not None])
                for _, slot in done:  # normalise copied the pixels out of shared memory
                    if slot is not None:
                        slots.release(slot)
                done.clear()
                pending.popleft()
                if pixels is None:
                    continue
                ie = clip.embed_image_tensors(pixels)
                rows = lo + np.flatnonzero(ok)
                img_emb[rows] = ie
                for j in range(k):
                    present = np.concatenate([c[2][j][1] for c in chunks])  # over the decodable rows
                    if not present.any():
                        continue
                    tokens = torch.cat([c[2][j][0] for c in chunks if c[2][j][0] is not None])
                    with torch.inference_mode(), clip._autocast():
                        te = clip.model.encode_text(tokens.to(clip.device))
                    te = torch.nn.functional.normalize(te.float(), dim=-1).cpu().numpy()
                    scores[j][rows[present]] = np.einsum("ij,ij->i", ie[present], te)
                    txt_emb[j][rows[present]] = te
        return scores, img_emb, txt_emb

    def annotate(self, active: pa.Table) -> Annotations:
        idx = np.flatnonzero(pc.is_valid(active.column("image")).to_numpy(zero_copy_only=False))
        if len(idx) == 0:
            return Annotations()
        which = captions(self.text_col)
        sub = active.take(pa.array(idx)).select(["image", *which])
        # a null original caption is scored as "" (as before); a row without a synthetic caption is not scored
        columns = [[t or "" for t in sub.column(c).to_pylist()] if c == "text" else sub.column(c).to_pylist()
                   for c in which]
        scores, ie, te = self.score_columns(sub.column("image").to_pylist(), columns)
        n = active.num_rows
        out: dict[str, Any] = {}
        for c, col_scores in zip(which, scores):
            full = np.full(n, np.nan, np.float32)
            full[idx] = col_scores
            out[score_column("clip_score", c)] = pa.array(full, pa.float32(), mask=np.isnan(full))
        if self.embeddings:  # the image and the original caption (text_col text or both)
            mask = ~np.isnan(out["clip_score"].to_numpy(zero_copy_only=False))
            out[IMAGE_EMBEDDING] = _scatter(ie, idx, mask, n)
            out[TEXT_EMBEDDING] = _scatter(te[0], idx, mask, n)
        return Annotations(columns=out)


class DecodeProcessDied(RuntimeError):
    """A decode process died (a native crash in the image decoder, or the OOM killer) while decoding a chunk
    holding these rows: an error of these rows, so row isolation narrows it down to the row (each call that
    meets it again starts a new pool), and the stage goes on with a new pool."""

    def __init__(self):
        super().__init__("a decode process died (a native crash in the image decoder, or out of memory) on a "
                         "chunk holding this row")


def _result(future):
    """A chunk's decoded result; a pool broken by a dead process raises DecodeProcessDied (one line)."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise DecodeProcessDied() from None


def _to_torch(chunk, pin: bool, slots=None, slot=None):
    """A decode process's numpy chunk as the thread path's tensors. Pixels in a shared-memory slot are read in
    place (the copy to a GPU from pageable memory returns once it has them); piped ones are pinned for an
    async copy to a GPU."""
    import torch

    pixels, ok, texts = chunk
    if isinstance(pixels, int):
        pixels = torch.from_numpy(slots.view(slot, pixels)) if pixels else None
    elif pixels is not None:
        pixels = torch.from_numpy(pixels)
        pixels = pixels.pin_memory() if pin else pixels
    return pixels, ok, [(None if t is None else torch.from_numpy(t), m) for t, m in texts]


def _scatter(emb: np.ndarray, idx: np.ndarray, mask: np.ndarray, n: int) -> pa.Array:
    """A list<float32> column of length n holding emb's rows at idx (null elsewhere)."""
    dim = emb.shape[1]
    full = np.zeros((n, dim), np.float32)
    full[idx] = emb
    flat = pa.FixedSizeListArray.from_arrays(pa.array(full.ravel(), pa.float32()), dim).cast(EMBEDDING)
    return pc.if_else(pa.array(mask), flat, pa.nulls(n, EMBEDDING))
