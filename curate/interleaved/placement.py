"""`doc_clip`: CLIP similarities between each document's images and its sentences, and mmc4's placement.

Scores only (decisions are `doc_image_filter`'s): per image, `image_clip_score` is the best similarity to
a sentence of the neighbouring text (the nearest text segment before and after the image), and the
image's position is mmc4's: a linear assignment (scipy's `linear_sum_assignment`, maximising total
similarity) of images to the document's sentences, each sentence taking at most one image while there
are enough sentences. `image_sentence` is the index into `sentences`, `image_sim` its similarity.
"""
from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import pyarrow as pa
from typing import Any

from pydantic import Field, PrivateAttr

from curate import schema
from curate.models.clip_settings import ClipWeights
from curate.stage import Annotations, Stage, register

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph: split after . ! ? followed by white space (mmc4 used a tokenizer; this
    is the same for the prose-like text interleaved corpora hold, and has no model to download)."""
    return [s.strip() for s in _SENTENCE_END.split(text or "") if s.strip()]


def assign(sim: np.ndarray) -> np.ndarray:
    """Sentence index per image maximising total similarity (images x sentences matrix).

    With more images than sentences the sentences are repeated, so every image still gets one; -1 when
    the document has no sentence.
    """
    from scipy.optimize import linear_sum_assignment

    n_img, n_sent = sim.shape
    out = np.full(n_img, -1, np.int64)
    if n_img == 0 or n_sent == 0:
        return out
    reps = -(-n_img // n_sent)
    rows, cols = linear_sum_assignment(np.tile(sim, (1, reps)), maximize=True)
    out[rows] = cols % n_sent
    return out


def sentence_layout(segments: list[dict]) -> tuple[list[str], list[list[int]]]:
    """(sentences of the document, sentence indices of each segment)."""
    sentences, per_segment = [], []
    for seg in segments:
        idx = []
        if seg["type"] == "text":
            for s in split_sentences(seg["text"]):
                idx.append(len(sentences))
                sentences.append(s)
        per_segment.append(idx)
    return sentences, per_segment


def neighbours(per_segment: list[list[int]], pos: int) -> list[int]:
    """Sentences of the nearest text segment before and after segment `pos`."""
    out = []
    for rng in (range(pos - 1, -1, -1), range(pos + 1, len(per_segment))):
        for p in rng:
            if per_segment[p]:
                out += per_segment[p]
                break
    return out


@register
class DocClip(ClipWeights, Stage):
    """Embed kept images and sentences with CLIP; write neighbour-text scores and mmc4 placement."""

    name: ClassVar[str] = "doc_clip"
    reads: ClassVar[tuple[str, ...]] = ("segments", "doc_images", "doc_image_bytes")
    writes: ClassVar[dict[str, pa.DataType]] = {
        "sentences": pa.list_(pa.string()),
        "image_sentence": pa.list_(pa.int32()),
        "image_sim": pa.list_(pa.float32()),
        "image_clip_score": pa.list_(pa.float32()),
    }
    uses_model: ClassVar[bool] = True

    batch_size: int = Field(64, ge=1, le=4096)  # images or sentences per CLIP forward pass
    _clip: Any = PrivateAttr(default=None)

    def setup(self) -> None:
        if self._clip is None:
            self._clip = self.load_clip()

    def _embed_images(self, blobs: list[bytes]) -> np.ndarray:
        from curate import images

        out = []
        for k in range(0, len(blobs), self.batch_size):
            ims = [images.decode_rgb(b) for b in blobs[k:k + self.batch_size]]
            out.append(self._clip.embed_images(ims))
        return np.concatenate(out) if out else np.zeros((0, self._clip.dim), np.float32)

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        out = [self._clip.embed_texts(texts[k:k + self.batch_size]) for k in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self._clip.dim), np.float32)

    def annotate(self, active: pa.Table) -> Annotations:
        self.setup()
        n = active.num_rows
        segs = active.column("segments").to_pylist()
        docs = active.column("doc_images").to_pylist()
        payload = active.column("doc_image_bytes").to_pylist()
        layouts, blobs, texts, where = {}, [], [], {}
        for i in range(n):
            if segs[i] is None:
                continue
            sentences, per_segment = sentence_layout(segs[i])
            layouts[i] = (sentences, per_segment, len(texts))
            texts += sentences
            for j, rec in enumerate(docs[i] or ()):
                if rec["status"] == schema.OK and payload[i] and payload[i][j] is not None:
                    where[(i, j)] = len(blobs)
                    blobs.append(payload[i][j])
        img_emb = self._embed_images(blobs)
        txt_emb = self._embed_texts(texts)
        cols = {c: [None] * n for c in self.writes}
        for i, (sentences, per_segment, t0) in layouts.items():
            recs = docs[i] or []
            js = [j for j in range(len(recs)) if (i, j) in where]
            sim = img_emb[[where[(i, j)] for j in js]] @ txt_emb[t0:t0 + len(sentences)].T if js else np.zeros((0, len(sentences)))
            placed = assign(sim)
            cols["sentences"][i] = sentences
            for c in ("image_sentence", "image_sim", "image_clip_score"):
                cols[c][i] = [None] * len(recs)
            for r, j in enumerate(js):
                s = int(placed[r])
                cols["image_sentence"][i][j] = s if s >= 0 else None
                cols["image_sim"][i][j] = float(sim[r, s]) if s >= 0 else None
                near = neighbours(per_segment, recs[j]["segment"])
                cols["image_clip_score"][i][j] = float(sim[r, near].max()) if near else None
        return Annotations(columns=cols)
