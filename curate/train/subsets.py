"""Random-subset controls: the same number of samples as a curated set, drawn uniformly from the raw set.

Why: "curated beats raw" can mean the curation picked better samples, or only that a smaller set was
repeated more often at the same budget. A random subset of raw with the curated set's size separates
the two (DataComp's baseline). Samples are whole WebDataset groups (every member sharing a key) copied
byte for byte; the draw is seeded per training seed, so seed s of the control is one fixed subset.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from curate.io import storage, tars
from curate.train.data import IMAGE_KEYS, TEXT_KEYS, TruncatedShard, expand_shards
from curate.train.video_data import VIDEO_KEYS

PER_TAR = 1000
PICTURE_KEYS = set(IMAGE_KEYS) | set(VIDEO_KEYS)  # a video sample (clip shards) is as usable as an image one


def _key_ext(name: str) -> tuple[str, str]:
    """WebDataset's split: key = path up to the first dot of the basename, ext = the rest."""
    d, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext


def usable_keys(shards: list[str]) -> list[tuple[str, str]]:
    """(tar, key) of every sample with an image (or a video) and a text: what training can use."""
    out = []
    for tar in expand_shards(shards):
        exts: dict[str, set] = {}
        try:
            with storage.open_tar(tar) as tf:  # local or s3://... (fsspec)
                for m in tf:
                    if m.isfile():
                        k, e = _key_ext(m.name)
                        exts.setdefault(k, set()).add(e.lower())
        except tars.TruncatedTar as err:  # its count (and a subset drawn from it) would silently be short
            raise TruncatedShard(str(err)) from None
        except (tarfile.TarError, OSError):
            continue  # training counts unreadable shards as shard_error; they hold no usable sample
        out += [(tar, k) for k, e in exts.items() if e & PICTURE_KEYS and e & set(TEXT_KEYS)]
    return out


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tf.addfile(info, io.BytesIO(data))


def write_random_subset(source: list[str], size: int, out_dir: Path, seed: int, min_tars: int = 1) -> list[str]:
    """Copy `size` usable samples of `source`, drawn without replacement with `seed`, into out_dir tars.

    min_tars: write at least this many tars (when there are that many samples), so every torchrun rank
    has a shard of its own (training splits shards per rank).

    Samples are renamed 00000000, 00000001, ... (keys of different source tars may collide); their
    members are copied byte for byte. Reuses out_dir when its subset.json records the same request
    (the tars are then checked by the experiment's content fingerprint like any other shards).
    """
    out_dir = Path(out_dir)
    keys = usable_keys(source)
    if size > len(keys):
        raise ValueError(f"a random subset of {size} samples needs that many; the source has {len(keys)}")
    listing = hashlib.sha256("\n".join(f"{t}|{k}" for t, k in keys).encode()).hexdigest()
    per_tar = max(1, min(PER_TAR, size // max(1, min_tars)))
    request = {"source": list(source), "source_samples": len(keys), "source_listing": listing,
               "size": size, "seed": seed, **({"per_tar": per_tar} if per_tar < min(PER_TAR, size) else {})}
    done = out_dir / "subset.json"
    if done.is_file() and json.loads(done.read_text()).get("request") == request:
        return sorted(str(p) for p in out_dir.glob("*.tar"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.tar"):
        old.unlink()
    done.unlink(missing_ok=True)
    pick = np.random.default_rng([seed, 7919]).choice(len(keys), size=size, replace=False)
    chosen: dict[str, set] = {}
    for i in pick.tolist():
        tar, k = keys[i]
        chosen.setdefault(tar, set()).add(k)
    written: list[str] = []
    out, n = None, 0
    for tar in sorted(chosen):
        members: dict[str, list] = {}
        with storage.open_tar(tar) as tf:  # local or s3://... (fsspec)
            for m in tf:
                if m.isfile():
                    k, ext = _key_ext(m.name)
                    if k in chosen[tar]:
                        members.setdefault(k, []).append((ext, tf.extractfile(m).read()))
        for k in sorted(members):
            if n % per_tar == 0:
                if out is not None:
                    out.close()
                written.append(str(out_dir / f"{n // per_tar:06d}.tar"))
                out = tarfile.open(written[-1], "w", format=tarfile.USTAR_FORMAT)
            for ext, data in members[k]:
                _add(out, f"{n:08d}.{ext}", data)
            n += 1
    if out is not None:
        out.close()
    done.write_text(json.dumps({"request": request, "samples": n, "tars": len(written)}, indent=1))
    return written
