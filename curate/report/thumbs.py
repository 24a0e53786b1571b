"""Thumbnails for the report: kept samples' read from the run's WebDataset shards by member key, dropped
samples' stored at commit time in OUT/thumbs/part-k.parquet.

Each shard is opened once and scanned only until every wanted key is found; images are shrunk to a small
JPEG and inlined as base64, so the report stays one file and reading stays bounded by what is shown.

A dropped row's image bytes exist only until its part is committed (meta/ holds no payload), so the
runner's part writer calls `write_dropped` first: for each (stage, reason) it keeps a small thumbnail of
at most `per_reason` dropped rows, chosen by a hash of the uid (the same rows on every re-run), and for
duplicates (rows with `dup_of`) whole clusters, so the report can show a keeper beside its copies.
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
from pathlib import Path

import pyarrow as pa

from curate.io import storage

log = logging.getLogger("curate.report")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
THUMB_SIZE = 160
DROPPED_PER_REASON = 24  # default of output.dropped_thumbnails
MEMBERS_PER_CLUSTER = 4  # dropped copies stored per duplicate cluster and part
DROPPED_SCHEMA = pa.schema([("uid", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
                            ("dup_of", pa.string()), ("thumb", pa.binary())])


def thumbnail_jpeg(data: bytes, size: int = THUMB_SIZE) -> bytes | None:
    """`data` shrunk to fit size x size as JPEG bytes; None if the bytes are not an image."""
    from curate import images

    try:
        im = images.decode_rgb(data, draft=size * 2)  # draft: cheap JPEG downscale while decoding
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a broken image just shows no thumbnail
        return None
    return buf.getvalue()


def jpeg_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def thumbnail_uri(data: bytes, size: int = THUMB_SIZE) -> str | None:
    """A base64 JPEG data URI of `data` shrunk to fit size x size; None if the bytes are not an image."""
    jpeg = thumbnail_jpeg(data, size)
    return jpeg_uri(jpeg) if jpeg else None


def _h(value: str) -> int:
    """A stable 64-bit hash (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def pick_dropped(rows: list[dict], per_reason: int, per_cluster: int = MEMBERS_PER_CLUSTER) -> list[int]:
    """Indices of the dropped rows (with image bytes) whose thumbnails a part keeps.

    rows: dicts with uid, status, stage, reason, dup_of, has_image. Per (stage, reason) at most `per_reason`:
    plain drops by hash(uid); duplicates cluster by cluster (largest in this part first, then hash(dup_of)),
    at most `per_cluster` copies each, so a stored copy usually comes with its cluster-mates.
    """
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r["status"] == "dropped" and r["has_image"] and per_reason > 0:
            groups.setdefault((r["stage"], r["reason"]), []).append(i)
    picked: list[int] = []
    for idx in groups.values():
        dups = [i for i in idx if rows[i]["dup_of"]]
        plain = sorted((i for i in idx if not rows[i]["dup_of"]), key=lambda i: _h(rows[i]["uid"]))
        size: dict[str, int] = {}
        for i in dups:
            size[rows[i]["dup_of"]] = size.get(rows[i]["dup_of"], 0) + 1
        dups.sort(key=lambda i: (-size[rows[i]["dup_of"]], _h(rows[i]["dup_of"]), _h(rows[i]["uid"])))
        taken: dict[str, int] = {}
        chosen = []
        for i in dups:
            k = rows[i]["dup_of"]
            if taken.get(k, 0) < per_cluster:
                taken[k] = taken.get(k, 0) + 1
                chosen.append(i)
        picked += (chosen + plain)[:per_reason]
    return sorted(picked)


def dropped_thumbnails(part: pa.Table, per_reason: int = DROPPED_PER_REASON, size: int = THUMB_SIZE) -> pa.Table:
    """The stored thumbnails (DROPPED_SCHEMA) of a bounded, reproducible sample of a part's dropped rows.

    Only the `image` column is thumbnailed (videos and documents have no single image); a row whose bytes do
    not decode is left out (its metadata row still says why it was dropped).
    """
    if per_reason <= 0 or "image" not in part.column_names or "status" not in part.column_names:
        return DROPPED_SCHEMA.empty_table()
    import pyarrow.compute as pc

    cols = {c: (part.column(c).to_pylist() if c in part.column_names else [None] * part.num_rows)
            for c in ("uid", "status", "stage", "reason", "dup_of")}
    has_image = pc.is_valid(part.column("image")).to_pylist()
    rows = [{**{c: v[i] for c, v in cols.items()}, "has_image": has_image[i]} for i in range(part.num_rows)]
    out = {name: [] for name in DROPPED_SCHEMA.names}
    images = part.column("image")
    for i in pick_dropped(rows, per_reason):
        jpeg = thumbnail_jpeg(images[i].as_py(), size)
        if jpeg is None:
            continue
        for c in ("uid", "stage", "reason", "dup_of"):
            out[c].append(rows[i][c])
        out["thumb"].append(jpeg)
    return pa.table(out, schema=DROPPED_SCHEMA)


def write_dropped(path: Path, part: pa.Table, per_reason: int = DROPPED_PER_REASON) -> int:
    """Store `dropped_thumbnails(part)` at `path` (atomically; nothing when there is none); returns how many."""
    from curate.io import atomic

    t = dropped_thumbnails(part, per_reason)
    if t.num_rows:
        atomic.write_parquet(t, path)
    else:
        try:  # a re-committed part leaves no stale file (`path` may be an object-store path: curate.io.storage)
            (path if hasattr(path, "unlink") else Path(path)).unlink()
        except FileNotFoundError:
            pass
    return t.num_rows


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for big sizes
        return int.from_bytes(field[1:], "big")
    field = field.split(b"\0", 1)[0].strip()
    return int(field, 8) if field else 0


def _pax(data: bytes) -> dict[str, str]:
    out, i = {}, 0
    while i < len(data):
        sp = data.find(b" ", i)
        if sp < 0:
            break
        length = int(data[i:sp])
        k, _, v = data[sp + 1:i + length - 1].partition(b"=")
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        i += length
    return out


def scan_members(path: Path, wanted: set[str], exts=IMAGE_EXTS, max_headers: int | None = None,
                 last_ext: str | None = "json") -> tuple[dict[str, tuple[int, int]], int]:
    """({key: (data offset, size)} of the image members of `wanted` keys, headers read), reading only the
    512-byte headers.

    Stops as soon as every key is settled or after `max_headers` headers. A key is settled when its image
    is found or when its `last_ext` member goes by: a curate shard writes each sample's json after its
    media (curate.io.members), so a text-only run's scan ends at the wanted keys' json members instead of
    reading every header of the shard. Understands ustar, PAX (path/size records) and GNU long names;
    tarfile would build a TarInfo per member, ten times slower.
    """
    found: dict[str, tuple[int, int]] = {}
    left = set(wanted)
    pos, long_name, pax, seen = 0, None, {}, 0
    with storage.as_path(path).open("rb") as f:  # a local file, or ranged reads of an s3://... object
        while left and (max_headers is None or seen < max_headers):
            seen += 1
            f.seek(pos)
            hdr = f.read(512)
            if len(hdr) < 512 or hdr.count(0) == 512:
                break
            size = _octal(hdr[124:136])
            kind = hdr[156:157]
            data = pos + 512
            pos = data + (size + 511) // 512 * 512
            if kind in (b"x", b"L"):
                body = f.read(size)
                if kind == b"x":
                    pax = _pax(body)
                else:
                    long_name = body.split(b"\0", 1)[0].decode("utf-8", "replace")
                continue
            if kind == b"g":
                continue
            name = hdr[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            if hdr[257:262] == b"ustar":
                prefix = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
                if prefix:
                    name = f"{prefix}/{name}"
            name = pax.get("path") or long_name or name
            if "size" in pax:
                size = int(pax["size"])
                pos = data + (size + 511) // 512 * 512
            long_name, pax = None, {}
            if kind not in (b"0", b"\0", b"7"):
                continue
            base, _, ext = name.rpartition(".")
            if base in left and ext.lower() in exts:
                found[base] = (data, size)
                left.discard(base)
            elif ext == last_ext:
                left.discard(base)
    return found, seen


def read_thumbnails(root: Path, wanted: dict[str, set[str]], size: int = 160,
                    max_headers: int | None = None) -> dict[tuple[str, str], str]:
    """{(shard, key): data URI} for the image members of `wanted` = {shard: {key, ...}}.

    `shard` is the run-relative name stored in meta (shards/NNNNNN.tar). Shards are read in `wanted`'s
    order until `max_headers` tar headers have been read in all. Missing shards or members are skipped
    (the report then shows text only).
    """
    out: dict[tuple[str, str], str] = {}
    root = root.resolve()
    left = max_headers
    for shard, keys in wanted.items():
        path = (root / shard).resolve()
        if not keys or not path.is_file() or root not in path.parents:
            continue
        if left is not None and left <= 0:
            break
        try:
            members, seen = scan_members(path, set(keys), max_headers=left)
            if left is not None:
                left -= seen
            with path.open("rb") as f:
                for key, (offset, n) in members.items():
                    f.seek(offset)
                    uri = thumbnail_uri(f.read(n), size)
                    if uri:
                        out[(shard, key)] = uri
        except (OSError, ValueError) as err:
            log.warning("report: cannot read %s: %s", path, err)
    return out


def dropped_from_shard(tar: Path, rows: list[dict], per_reason: int = DROPPED_PER_REASON,
                       size: int = THUMB_SIZE) -> pa.Table:
    """Thumbnails (DROPPED_SCHEMA) of a bounded sample of rows dropped after their part was committed
    (`curate refilter`): rows are dicts with uid, stage, reason, dup_of and the `key` their image still
    has in the committed shard `tar`. Same choice as at commit time (pick_dropped)."""
    rows = [{**r, "status": "dropped", "has_image": bool(r.get("key"))} for r in rows]
    picked = [rows[i] for i in pick_dropped(rows, per_reason)]
    out = {name: [] for name in DROPPED_SCHEMA.names}
    tar = storage.as_path(tar)  # a local shard or one on an object store (ranged reads)
    if picked and tar.is_file():
        members, _ = scan_members(tar, {r["key"] for r in picked})
        with tar.open("rb") as f:
            for r in picked:
                if r["key"] not in members:
                    continue
                offset, n = members[r["key"]]
                f.seek(offset)
                jpeg = thumbnail_jpeg(f.read(n), size)
                if jpeg is None:
                    continue
                for c in ("uid", "stage", "reason", "dup_of"):
                    out[c].append(r.get(c))
                out["thumb"].append(jpeg)
    return pa.table(out, schema=DROPPED_SCHEMA)
