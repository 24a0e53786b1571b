"""WebDataset loading for training and evaluation: any shards with an image (jpg/png/webp) and a text.

Why a small own pipeline on top of the webdataset library: bad samples (a corrupt tar, a sample with
no image or no text, an image that will not decode) must be *counted*, not silently dropped, and the
counts must reach the training log from inside DataLoader worker processes. Each worker yields whole
batches together with the skips it recorded since its previous batch, so the main process can sum
them exactly. Shards are split per rank (wds.split_by_node) and per worker (wds.split_by_worker).
"""
from __future__ import annotations

import glob
import os
import random
import re
import tarfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import webdataset as wds

from curate.images import decode_rgb
from curate.io import storage, tars

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TEXT_KEYS = ("txt", "text", "caption")

# Skip reasons recorded in logs and summaries (public vocabulary).
SKIP_REASONS = ("shard_error", "missing_image", "missing_text", "image_decode_error")


class DataError(ValueError):
    """Shards that cannot be trained or evaluated on (none found, none readable)."""


class TruncatedShard(DataError, tars.TruncatedTar):
    """A tar that ends before its archive does: no end-of-archive block after its last member."""


def expand_shards(specs: Sequence[str]) -> list[str]:
    """Turn shard arguments (files, folders, globs, `{000000..000009}` brace ranges) into a sorted list of tars."""
    import braceexpand

    out: list[str] = []
    for spec in specs:
        for s in braceexpand.braceexpand(str(spec)):
            if s.startswith(("http://", "https://")):  # one tar each (http has no listing); a missing one is
                out.append(s)  # a counted shard_error when read, and an experiment's fingerprint refuses it
                continue
            if storage.is_remote(s) and not s.startswith("pipe:"):
                out.extend(_remote_shards(s))
                continue
            p = Path(s)
            if p.is_dir():
                found = sorted(str(x) for x in p.glob("*.tar"))
                if not found and (p / "shards").is_dir():  # a curate run directory
                    found = sorted(str(x) for x in (p / "shards").glob("*.tar"))
                if not found:
                    raise DataError(f"no .tar shards in folder {s}")
                out.extend(found)
            elif any(c in s for c in "*?["):
                found = sorted(glob.glob(s))
                if not found:
                    raise DataError(f"no shards match {s}")
                out.extend(found)
            elif p.is_file():
                out.append(str(p))
            else:
                raise DataError(f"shard not found: {s}")
    if not out:
        raise DataError("no shards given")
    return out


def holds_video(shards: list[str], members: int = 64) -> bool:
    """Whether the first readable shard's first members include a video (.mp4, ...) and no image.

    Why: image training on video shards skips every sample as `missing_image`; the error should name
    `--video-frames` rather than suggest corrupt shards. Reads tar headers only, of one shard.
    """
    from curate.train.video_data import VIDEO_KEYS

    for tar in shards:
        exts: set = set()
        try:
            with storage.open_tar(tar) as tf:
                for i, m in enumerate(tf):
                    if i >= members:
                        break
                    exts.add(m.name.rpartition("/")[2].partition(".")[2].lower())
        except Exception:  # noqa: BLE001 - an unreadable shard says nothing; try the next
            continue
        if exts:
            return bool(exts & set(VIDEO_KEYS)) and not exts & set(IMAGE_KEYS)
    return False


def _remote_shards(url: str) -> list[str]:
    """Tars named by an fsspec URL (s3://bucket/out, .../shards/, a glob, one tar), as URLs."""
    from curate.io import inputfs

    try:
        fs, inner = inputfs.filesystem(url)
        if any(c in inner for c in "*?["):
            found = fs.glob(inner)
        elif fs.isdir(inner):
            found = [p for p in fs.ls(inner, detail=False) if p.endswith(".tar")]
            if not found and fs.isdir(inner.rstrip("/") + "/shards"):  # a curate run directory
                found = [p for p in fs.ls(inner.rstrip("/") + "/shards", detail=False) if p.endswith(".tar")]
        else:
            found = [inner] if fs.isfile(inner) else []
    except (OSError, ValueError) as err:
        raise DataError(f"cannot list shards {url}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not found:
        raise DataError(f"no .tar shards at {url}")
    return sorted(fs.unstrip_protocol(p) for p in found)


def _open_shards(data, handler):
    """webdataset's url_opener, with fsspec for object-store URLs (s3://, gs://, ...): webdataset's own
    gopen knows local files, pipe: and curl-able URLs only. A remote shard whose store gives no version
    (an http server sending no validator) is read from the fetch session's copy (storage.session_copy):
    streamed, it was downloaded again every epoch and could change between reads."""
    import fsspec

    for sample in data:
        url = sample["url"]
        try:
            copy = storage.session_copy(url) if not url.startswith("pipe:") else None
            if copy is not None:
                sample.update(stream=open(copy, "rb"))
            elif storage.is_remote(url) and not url.startswith(("pipe:", "http://", "https://")):
                sample.update(stream=fsspec.open(url, "rb").open())
            else:
                sample.update(stream=wds.gopen(url))
            yield sample
        except Exception as exn:  # noqa: BLE001 - the handler decides, as in webdataset
            exn.args = exn.args + (url,)
            if not handler(exn):
                break


_META = re.compile(r"__[^/]*__($|/)")  # webdataset's own members (__key__ ...), skipped as its reader does


def _tar_members(stream, url: str, handler) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular member of one tar stream; TruncatedShard when the stream ends before
    the archive's end-of-archive block (curate.io.tars, the one owner of that check).

    Why not webdataset's tar_file_iterator: Python's tarfile ends a stream quietly where the file ends at
    a header (a copy cut at a member boundary, or inside a header block), so a cut shard was read as a
    shorter one and training went on, one shard's tail short, with nothing counted. An error inside one
    member goes to `handler` as in webdataset."""
    count, name = 0, None
    try:
        with tarfile.open(fileobj=stream, mode="r|*", tarinfo=tars.header_recorder()) as tf:
            for info in tf:
                count, name = count + 1, info.name
                if not info.isreg() or _META.match(info.name):
                    continue
                try:
                    data = tf.extractfile(info).read()
                except tarfile.ReadError:
                    raise
                except Exception as exn:  # noqa: BLE001 - one member's error: the handler decides
                    exn.args = exn.args + (url,)
                    if handler(exn):
                        continue
                    return
                yield info.name, data
            why = tars.problem(tf)
    except (tarfile.ReadError, EOFError) as err:
        if not tars.is_cut_data(err) or not count:  # not a tar at all: the caller's handler counts it
            raise
        why = tars.CUT_DATA
    if why is not None:
        raise TruncatedShard(tars.message(url, count, name, why))


def _tar_files(sources, handler) -> Iterator[dict]:
    """webdataset's file records ({fname, data, __url__}) of each opened shard, through _tar_members."""
    for source in sources:
        url = source["url"]
        try:
            for fname, data in _tar_members(source["stream"], url, handler):
                yield {"fname": fname, "data": data, "__url__": url}
        except TruncatedShard:
            raise
        except Exception as exn:  # noqa: BLE001 - an unreadable shard: the handler decides, as in webdataset
            exn.args = exn.args + (url,)
            if not handler(exn):
                break


def _tar_samples(src, handler):
    from webdataset import tariterators

    return tariterators.group_by_keys(_tar_files(_open_shards(src, handler), handler), handler=handler)


class SkipCounter:
    """A webdataset `handler` that records the exception kind and keeps going."""

    def __init__(self):
        self.counts: Counter = Counter()

    def __call__(self, exn: BaseException) -> bool:
        self.counts["shard_error"] += 1
        return True  # continue with the next shard/sample


RECAPTION_KEY = "recap.txt"  # the synthetic caption the shard writer stores beside .txt


def decode_sample(sample: dict, preprocess: Callable, skips: Counter, recaption_prob: float = 0.0,
                  rng: random.Random | None = None, video_frames: int = 0):
    """(image tensor, text) from one raw tar sample, or None with the reason counted.

    With `recaption_prob` p, a sample that has a synthetic caption (`.recap.txt`) uses it instead of
    its original text with probability p (drawn from `rng`), so the caption mix is a training knob.
    With `video_frames` k > 0 the picture is the sample's video (`.mp4`, ...) as a storyboard of k frames
    (curate/train/video_data.py); a video that does not decode counts as `image_decode_error`.
    """
    if video_frames:
        from curate.train.video_data import video_key

        img_key = video_key(sample)
    else:
        img_key = next((k for k in IMAGE_KEYS if k in sample), None)
    if img_key is None:
        skips["missing_image"] += 1
        return None
    txt_key = next((k for k in TEXT_KEYS if k in sample), None)
    text = sample[txt_key].decode("utf-8", "replace").strip() if txt_key else ""
    if recaption_prob > 0 and sample.get(RECAPTION_KEY) and rng is not None and rng.random() < recaption_prob:
        text = sample[RECAPTION_KEY].decode("utf-8", "replace").strip() or text
    if not text:
        skips["missing_text"] += 1
        return None
    try:
        if video_frames:
            from curate.train.video_data import video_image

            image = preprocess(video_image(sample[img_key], video_frames))
        else:
            image = preprocess(decode_rgb(sample[img_key]))
    except Exception:  # noqa: BLE001 - any undecodable image is one counted skip
        skips["image_decode_error"] += 1
        return None
    return image, text


def raw_samples(shards: list[str], handler: SkipCounter, split: bool = True) -> Iterator[dict]:
    """Raw sample dicts of these shards, this rank's and this worker's share when split."""
    stages = [wds.SimpleShardList(shards)]
    if split:
        stages += [wds.split_by_node, wds.split_by_worker]
    stages.append(wds.filters.pipelinefilter(_tar_samples)(handler=handler))
    return iter(wds.DataPipeline(*stages))


class TrainBatches(torch.utils.data.IterableDataset):
    """Endless (images, tokens, skips) batches: shards reshuffled every pass, samples shuffled in a buffer.

    Every pass over the shards uses seed + pass as its shuffle seed, the same on every rank, so the
    per-rank split is a partition. A pass that yields no sample at all ends the stream (the caller
    reports it) instead of spinning forever on empty or corrupt shards. A first pass with fewer usable
    samples than one batch yields (None, that count, skips) and ends: the caller refuses to train. So does
    a truncated shard, with (None, its one-line message, skips).
    """

    def __init__(self, shards: list[str], preprocess: Callable, tokenizer: Callable, batch_size: int,
                 seed: int = 0, shuffle_buffer: int = 1000, start_pass: int = 0, recaption_prob: float = 0.0,
                 video_frames: int = 0):
        super().__init__()
        self.shards, self.preprocess, self.tokenizer = list(shards), preprocess, tokenizer
        self.batch_size, self.seed, self.shuffle_buffer, self.start_pass = batch_size, seed, shuffle_buffer, start_pass
        self.recaption_prob, self.video_frames = recaption_prob, video_frames

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rank = int(os.environ.get("RANK", 0))
        handler = SkipCounter()
        skips = handler.counts
        reported: Counter = Counter()
        images: list = []
        texts: list = []
        p = self.start_pass
        while True:
            order = list(self.shards)
            random.Random(self.seed * 1000003 + p).shuffle(order)
            rng = random.Random((self.seed, p, rank, wid).__hash__())
            buf: list = []
            n_pass = 0
            cap_rng = random.Random((self.seed, p, rank, wid, 7).__hash__())
            try:
                for sample in raw_samples(order, handler):
                    got = decode_sample(sample, self.preprocess, skips, self.recaption_prob, cap_rng,
                                        self.video_frames)
                    if got is None:
                        continue
                    n_pass += 1
                    buf.append(got)
                    if len(buf) < self.shuffle_buffer:
                        continue
                    i = rng.randrange(len(buf))
                    buf[i], buf[-1] = buf[-1], buf[i]
                    yield from self._add(buf.pop(), images, texts, skips, reported)
            except TruncatedShard as err:  # refused, not counted: how many samples it lost is unknown
                yield None, str(err), dict(skips - reported)  # (a message, not a traceback from a worker)
                return
            rng.shuffle(buf)
            for got in buf:
                yield from self._add(got, images, texts, skips, reported)
            if n_pass == 0:
                if skips != reported:  # hand the last skips to the caller before ending
                    yield None, None, dict(skips - reported)
                return
            if p == self.start_pass and n_pass < self.batch_size:
                # fewer distinct samples than one batch: every batch would hold copies of the same few
                # (a truncated shard trained on 32 copies of 1 sample); report the count and end
                yield None, n_pass, dict(skips - reported)
                return
            p += 1

    def _add(self, got, images, texts, skips, reported):
        images.append(got[0])
        texts.append(got[1])
        if len(images) == self.batch_size:
            delta = dict(skips - reported)
            reported.update(delta)
            batch = (torch.stack(images), self.tokenizer(texts), delta)
            images.clear()
            texts.clear()
            yield batch


def make_loader(dataset: TrainBatches, workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over pre-batched items (batch_size=None)."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       persistent_workers=False, pin_memory=torch.cuda.is_available(),
                                       prefetch_factor=4 if workers else None)
