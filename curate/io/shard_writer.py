"""Write one finished part: its kept samples as a WebDataset tar and every row as a metadata Parquet part.

The tar is written first and the Parquet part second, each atomically; the Parquet part is the commit
marker, so a part counts as done exactly when meta/part-k.parquet exists.
"""
from __future__ import annotations

import hashlib
import re
import tarfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import schema
from curate.io import atomic, checksums
from curate.io.members import CAPTION_POLICIES, member_columns, sample_members, table_members
from curate.io.rundir import RunDir

# which members a sample has under each caption_policy is decided in curate.io.members (validate uses it too)
__all__ = ["CAPTION_POLICIES", "sample_members", "write_tar", "write_part", "place", "key_for"]


def _tables(samples):
    """A table, an iterable of tables, or a list of dicts, as a sequence of tables or dicts."""
    return (samples,) if isinstance(samples, pa.Table) else samples


def _kept_tables(table: pa.Table, mask, budget: int = 1 << 20):
    """The rows of `table` where `mask` holds, about a MiB of rows at a time (256 to 1024 rows): filtering
    the whole part first would hold a second copy of every kept image (the part's largest column) while the
    tar is written; text-only rows go 1024 at a time (fewer calls per row; 8192 was slower again: each
    batch's tar bytes are then a fresh multi-MiB allocation)."""
    step = max(256, min(1024, budget * table.num_rows // max(table.nbytes, 1)))
    for lo in range(0, table.num_rows, step):
        yield table.slice(lo, step).filter(mask.slice(lo, step))


_ZEROS = bytes(512)


class _TarOut:
    """Appends regular-file members to a tar stream with the bytes `tarfile` (PAX format) would write.

    tarfile builds every header through a dict, a pax check and a copy of the TarInfo: ~25 us a member,
    most of a text-only part's commit (two members per sample). A member with an ASCII name of at most 100
    characters needs no pax record, so its ustar header is a fixed template plus name, size and checksum;
    other members go through tarfile itself (tests/io check the bytes are identical)."""

    def __init__(self, fileobj, mtime: int):
        self.f, self.offset, self.mtime = fileobj, 0, mtime
        # name (100) | mode uid gid (24) | size (12) | mtime (12) | checksum (8) | type, link, magic, owner...
        self.mid = (tarfile.itn(0o644, 8, tarfile.USTAR_FORMAT) + tarfile.itn(0, 8, tarfile.USTAR_FORMAT) * 2)
        self.mtime12 = tarfile.itn(mtime, 12, tarfile.USTAR_FORMAT)
        self.rest = (tarfile.REGTYPE + b"\0" * 100 + tarfile.POSIX_MAGIC
                     + tarfile.stn("curate", 32, "ascii", "strict") * 2 + b"\0" * 183)
        self.base = sum(self.mid) + sum(self.mtime12) + 8 * ord(" ") + sum(self.rest)
        # the same header with an empty name, a zero size field and the checksum as spaces, for add_columns
        self.template = np.frombuffer(b"\0" * 100 + self.mid + b"\0" * 12 + self.mtime12 + b" " * 8 + self.rest,
                                      np.uint8)

    def add_columns(self, slots: list[tuple[pa.Array, pa.Array]]) -> None:
        """Append the members of `members.member_columns` (sample by sample, in slot order) with headers built
        as arrays: the bytes `add` writes member by member, at a fraction of the Python work per member."""
        names, data = _interleave(slots)
        if not len(names):
            return
        noff, nval = _flat(names)
        doff, dval = _flat(data)
        sizes, nlen = np.diff(doff), np.diff(noff)
        if nlen.max() > 100 or (len(nval) and nval.max() > 127) or sizes.max() >= 8 ** 11:  # needs pax: tarfile
            for name, payload in zip(names.to_pylist(), data.to_pylist()):
                self.add(name.decode("utf-8"), payload)
            return
        head = np.tile(self.template, (len(sizes), 1))
        rows = np.repeat(np.arange(len(sizes)), nlen)
        head[rows, np.arange(len(rows)) - np.repeat(noff[:-1] - noff[0], nlen)] = nval[noff[0]:noff[-1]]
        head[:, 124:135] = _octal(sizes, 11)
        head[:, 135] = 0
        head[:, 148:154] = _octal(head.sum(axis=1, dtype=np.int64), 6)  # the checksum field counts as spaces
        head[:, 154] = 0
        hb, pads = head.tobytes(), (-sizes % 512).tolist()
        lo, hi = doff[:-1].tolist(), doff[1:].tolist()
        # text-sized payloads: one bytes copy and one joined write; media: memoryview slices, a write each
        db = dval[lo[0]:hi[-1]].tobytes() if hi[-1] - lo[0] <= 1 << 24 else memoryview(dval)
        base = lo[0] if isinstance(db, bytes) else 0
        pieces = [x for k in range(len(pads)) for x in
                  (hb[512 * k:512 * k + 512], db[lo[k] - base:hi[k] - base], _ZEROS[:pads[k]])]
        if isinstance(db, bytes):
            self.f.write(b"".join(pieces))
        else:
            for x in pieces:
                self.f.write(x)
        self.offset += len(hb) + hi[-1] - lo[0] + sum(pads)

    def add(self, name: str, data: bytes) -> None:
        size = len(data)
        pad = -size % tarfile.BLOCKSIZE
        if len(name) <= 100 and name.isascii() and size < 8 ** 11:
            nb = name.encode("ascii")
            sz = b"%011o\0" % size
            chk = b"%06o\0 " % (self.base + sum(nb) + sum(sz))  # the checksum counts its own field as spaces
            head = nb.ljust(100, b"\0") + self.mid + sz + self.mtime12 + chk + self.rest
            if size <= 65536:  # one write for a small member (most of a text-only shard's members)
                self.f.write(b"".join((head, data, b"\0" * pad)))
                self.offset += 512 + size + pad
                return
        else:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, self.mtime, 0o644
            info.uname = info.gname = "curate"
            head = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        self.f.write(head)
        self.f.write(data)
        if pad:
            self.f.write(b"\0" * pad)
        self.offset += len(head) + size + pad

    def close(self) -> None:
        """The end of archive: two zero blocks, then zeros up to a whole record (as TarFile.close)."""
        end = self.offset + 2 * tarfile.BLOCKSIZE
        self.f.write(b"\0" * (2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE)))


def _interleave(slots):
    """(names, data) of every present member, sample-major: sample 0's slots in order, then sample 1's."""
    n = len(slots[0][0])
    names = pa.concat_arrays([nm.cast(pa.binary()) for nm, _ in slots])
    data = pa.concat_arrays([d.cast(pa.large_binary()) for _, d in slots])
    order = np.arange(len(slots) * n).reshape(len(slots), n).T.reshape(-1)
    order = order[pc.is_valid(names).to_numpy(zero_copy_only=False)[order]]
    return names.take(pa.array(order)), data.take(pa.array(order))


def _flat(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a binary or large_binary array as numpy views (values indexed by the offsets)."""
    kind = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], kind)[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    values = arr.buffers()[2]
    return offsets, (np.frombuffer(values, np.uint8) if values is not None else np.zeros(0, np.uint8))


def _octal(v: np.ndarray, digits: int) -> np.ndarray:
    """Zero-padded octal digits (ASCII) of each value, as a (len(v), digits) array."""
    return ((v[:, None] >> (3 * np.arange(digits - 1, -1, -1))) & 7).astype(np.uint8) + ord("0")


def write_tar(path, samples, caption_policy: str = "both") -> str:
    """Write samples (a Table with key/image/text/... columns, an iterable of such tables, or a list of dicts)
    as one WebDataset tar, atomically; returns the SHA-256 of its bytes (hashed as written: curate.io.checksums)."""
    now = int(time.time())
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb", buffering=1 << 20) as raw:
            f = checksums.HashingWriter(raw)
            out = _TarOut(f, now)
            for s in _tables(samples):
                slots = member_columns(s, caption_policy) if isinstance(s, pa.Table) and s.num_rows else None
                if slots is not None:
                    out.add_columns(slots)
                    continue
                for members in (table_members(s, caption_policy) if isinstance(s, pa.Table)
                                else (sample_members(s, caption_policy),)):
                    for name, data in members:
                        out.add(name, data)
            out.close()
    return f.hexdigest()


_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,120}")
# the shape of a hashed key; a uid of this shape is hashed too, so no uid is ever another uid's hash
_HASHED_KEY = re.compile(r"h[0-9a-f]{24}")


def key_for(uid: str) -> str:
    """The tar member basename for a uid: the uid itself when it is safe, else a stable hash of it.

    WebDataset splits a member name at its first dot and treats slashes as folders, so a corpus id like
    `img.001` would silently become another sample's key. Hashed keys are `h` + 24 hex digits, and a uid
    that already looks like that is hashed as well: the kept uids and the hashes are disjoint sets, so
    keys are unique whenever uids are (the reader refuses repeated ids), up to a 96-bit hash collision.
    """
    if _SAFE_KEY.fullmatch(uid) and not _HASHED_KEY.fullmatch(uid):
        return uid
    return "h" + hashlib.sha1(uid.encode("utf-8")).hexdigest()[:24]


def keys_for(uids) -> pa.Array:
    """`key_for` of a column of uids: the safe ones (curate's own hex uids, most ids) are matched with one
    regex over the column, only the others are hashed in Python."""
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks()
    safe = pc.and_(pc.match_substring_regex(uids, "^" + _SAFE_KEY.pattern + "$"),
                   pc.invert(pc.match_substring_regex(uids, "^" + _HASHED_KEY.pattern + "$")))
    safe = pc.fill_null(safe, False)
    if pc.all(safe).as_py() is not False:
        return uids
    rest = pc.invert(safe)
    return pc.replace_with_mask(uids, rest, pa.array([key_for(u) for u in uids.filter(rest).to_pylist()], pa.string()))


def place(table: pa.Table, part: int) -> pa.Table:
    """Assign shard and key to the kept rows of a part (key = uid when safe: unique, stable, joinable)."""
    kept = schema.active_mask(table)
    keys = keys_for(table.column("uid"))
    kept_keys = keys.filter(kept)
    if pc.count_distinct(kept_keys).as_py() != len(kept_keys):  # two members of one sample: never write it
        dup = pc.value_counts(kept_keys).filter(pc.greater(pc.value_counts(kept_keys).field("counts"), 1))
        raise RuntimeError(f"bug: part {part} has repeated tar keys (first {dup[0]['values']}); uids must be unique")
    return schema.set_rows(table, kept, {"shard": RunDir.shard_name(part), "key": keys})


def write_part(run: RunDir, part: int, table: pa.Table, run_schema: pa.Schema, caption_policy: str = "both") -> dict:
    """Commit a finished part; returns its summary (rows, kept, funnel counts)."""
    table = place(schema.conform(table, run_schema), part)
    mask = pc.fill_null(schema.active_mask(table), False)
    digest = write_tar(run.shard(part), _kept_tables(table, mask), caption_policy)
    vectors = [c for c in run_schema.names if c in schema.SIDECAR_COLUMNS and table.column(c).null_count < table.num_rows]
    if vectors:  # before the meta part: the meta part stays the commit marker
        side = table.select(["uid", *vectors])
        atomic.write_parquet(side.filter(pc.is_valid(side.column(vectors[0]))), run.embeddings_part(part))
    meta = checksums.with_shard_sha256(table.select(schema.meta_schema(run_schema).names), digest)
    atomic.write_parquet(meta, run.meta_part(part))
    images = (pc.sum(pc.and_(mask, pc.is_valid(table.column("image"))).cast(pa.int64())).as_py()
              if "image" in table.column_names else 0)
    return {"part": part, "rows": table.num_rows, "kept": int(pc.sum(mask.cast(pa.int64())).as_py() or 0),
            "failed": int(pc.sum(pc.equal(table.column("status"), schema.FAILED)).as_py() or 0),
            "images": int(images or 0)}
