"""Thumbnails for the report, read from the run's WebDataset shards by member key.

Each shard is opened once and scanned only until every wanted key is found; images are shrunk to a small
JPEG and inlined as base64, so the report stays one file and reading stays bounded by what is shown.
"""
from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

log = logging.getLogger("curate.report")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def thumbnail_uri(data: bytes, size: int = 160) -> str | None:
    """A base64 JPEG data URI of `data` shrunk to fit size x size; None if the bytes are not an image."""
    from curate import images

    try:
        im = images.decode_rgb(data, draft=size * 2)  # draft: cheap JPEG downscale while decoding
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a broken image just shows no thumbnail
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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


def scan_members(path: Path, wanted: set[str], exts=IMAGE_EXTS,
                 max_headers: int | None = None) -> tuple[dict[str, tuple[int, int]], int]:
    """({key: (data offset, size)} of the image members of `wanted` keys, headers read), reading only the
    512-byte headers.

    Stops as soon as every key is found or after `max_headers` headers. Understands ustar, PAX (path/size
    records) and GNU long names; tarfile would build a TarInfo per member, ten times slower.
    """
    found: dict[str, tuple[int, int]] = {}
    left = set(wanted)
    pos, long_name, pax, seen = 0, None, {}, 0
    with open(path, "rb") as f:
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
            with open(path, "rb") as f:
                for key, (offset, n) in members.items():
                    f.seek(offset)
                    uri = thumbnail_uri(f.read(n), size)
                    if uri:
                        out[(shard, key)] = uri
        except (OSError, ValueError) as err:
            log.warning("report: cannot read %s: %s", path, err)
    return out
