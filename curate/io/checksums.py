"""SHA-256 of every shard as it was written, so `curate validate` (and `sha256sum -c`) can tell a shard that
changed since: bit rot, a truncated copy, an edited member that still decodes.

Why here and in this shape: the tar's bytes are hashed while they are written (no second read), and the
digest travels in the part's meta Parquet file (schema metadata `curate.shard_sha256`), which is the
part's commit marker: a committed part always has its shard's digest, whatever happened to the driver or
the manifest. At the end of a run `shards.sha256` lists them in `sha256sum` format, so
`cd OUT && sha256sum -c shards.sha256` checks a copy with standard tools.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from curate.io import storage

KEY = b"curate.shard_sha256"
CHUNK = 1 << 22


class HashingWriter:
    """A write-only file wrapper that hashes everything written through it."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def write(self, data) -> int:
        self.h.update(data)
        return self.f.write(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


class HashingReader:
    """A read-only file wrapper that hashes every byte read through it: `curate validate` walks a shard's tar
    members and checks its digest from one read of its bytes (an object store's read costs a request and
    the transfer, so a second pass just to hash doubled validate's I/O)."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.h.update(data)
        return data

    def hexdigest(self) -> str:
        """The digest of the whole file: whatever the reader left unread (a tar's end padding) is read first."""
        while self.read(CHUNK):
            pass
        return self.h.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a local or object-store file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with storage.as_path(path).open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def with_shard_sha256(table: pa.Table, digest: str | None) -> pa.Table:
    """The meta table with its shard's digest in the schema metadata (removed when digest is None: a part
    without a shard, or one copied from another run, must not carry a digest of a file it does not have)."""
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != KEY}
    if digest is not None:
        meta[KEY] = digest.encode()
    return table.replace_schema_metadata(meta or None)


def recorded(meta_path) -> str | None:
    """The shard digest a meta part recorded, or None (runs from before digests, parts without a shard)."""
    with storage.as_path(meta_path).open("rb") as f:
        value = (pq.read_schema(f).metadata or {}).get(KEY)
    return value.decode() if value else None
