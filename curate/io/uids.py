"""Default sample uids (when the input has no id column): the one place that decides them.

uid = the first 20 hex digits of SHA-1("{source}\\0{url}\\0{text}\\0{occurrence}"), where `occurrence`
counts earlier input rows with the same url and text (and input_key, for samples that carry their own
key: a tar member, a file path), so byte-identical rows still get distinct uids, and None is written "None"
(as Python formats it). Uids are stable: the same input gives the same uids in every run and version.

`Uids.of_batch` computes a batch's uids as columns (DuckDB's sha1 and hash over the Arrow batch; Python
only for repeated rows): splitting 200k captions spent ~0.4 s on a SHA-1 and a blake2 per row in Python.
`row_uid` is the same function for one row (the reference the tests hold the column path to, and the path
for input_key columns that are not strings, whose Python formatting DuckDB would not reproduce).
"""
from __future__ import annotations

import hashlib
from itertools import repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def row_uid(source: str, url, text, occurrence: int, key=None) -> str:
    u = url if key is None else f"{url}\0{key}"
    h = hashlib.sha1(f"{source}\0{u}\0{text}\0{occurrence}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:20]


# one row's identity for the occurrence count, and its uid at occurrence 0, as DuckDB expressions over
# columns u (url), t (text), k (input_key or null), with None written "None" like Python's f-string
_QUERY = """
SELECT hash(CASE WHEN k IS NULL THEN cu || chr(0) || ct ELSE cu || chr(0) || ct || chr(0) || k END) AS h,
       left(sha1($source || chr(0) || CASE WHEN k IS NULL THEN cu ELSE cu || chr(0) || k END
                 || chr(0) || ct || chr(0) || '0'), 20) AS uid
FROM (SELECT i, coalesce(u, 'None') AS cu, coalesce(t, 'None') AS ct, k FROM batch)
ORDER BY i
"""


class Uids:
    """Default uids of an input read batch by batch; holds the occurrence counts across batches."""

    def __init__(self, source: str):
        self.source = source
        # identity hash -> rows seen with it; a collision only shifts an occurrence number (uids stay
        # distinct: the sha1 input differs anyway)
        self.seen: dict[int, int] = {}
        self._con = None

    def of_batch(self, urls: pa.Array, texts: pa.Array, keys: pa.Array | None = None) -> pa.Array:
        """uids of one batch (url and text as string arrays, keys: the input_key column or None)."""
        n = len(urls)
        if keys is not None and not pa.types.is_string(keys.type):
            return self._python(urls.to_pylist(), texts.to_pylist(), keys.to_pylist())
        if self._con is None:
            import duckdb

            self._con = duckdb.connect()
        batch = pa.table({"i": pa.array(np.arange(n)), "u": urls, "t": texts,
                          "k": keys if keys is not None else pa.nulls(n, pa.string())})
        self._con.register("batch", batch)
        try:
            out = self._con.sql(_QUERY, params={"source": self.source}).to_arrow_table()
        finally:
            self._con.unregister("batch")
        occ = self._occurrences(out.column("h").to_numpy())
        uids = out.column("uid").combine_chunks()
        again = np.flatnonzero(occ)
        if len(again):  # repeated rows: their uid carries the occurrence number
            u, t = urls.take(pa.array(again)).to_pylist(), texts.take(pa.array(again)).to_pylist()
            k = keys.take(pa.array(again)).to_pylist() if keys is not None else [None] * len(again)
            fixed = [row_uid(self.source, a, b, int(o), c) for a, b, c, o in zip(u, t, k, occ[again])]
            mask = np.zeros(n, bool)
            mask[again] = True
            uids = pc.replace_with_mask(uids, pa.array(mask), pa.array(fixed, pa.string()))
        return uids

    def _occurrences(self, h: np.ndarray) -> np.ndarray:
        """For each row, how many earlier rows (this batch and before) share its identity hash."""
        order = np.argsort(h, kind="stable")
        sh = h[order]
        first = np.r_[True, sh[1:] != sh[:-1]]
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        uniq = sh[starts].tolist()
        base = np.fromiter(map(self.seen.get, uniq, repeat(0)), np.int64, len(uniq))
        counts = np.diff(np.r_[starts, len(sh)])
        self.seen.update(zip(uniq, (base + counts).tolist()))
        occ = np.empty(len(h), np.int64)
        occ[order] = base[group] + np.arange(len(h)) - starts[group]
        return occ

    def _python(self, urls: list, texts: list, keys: list) -> pa.Array:
        """Row by row (input_key columns of other types: their Python formatting is part of the uid)."""
        out = []
        for u, t, key in zip(urls, texts, keys):
            ident = f"{u}\0{t}" if key is None else f"{u}\0{t}\0{key}"
            h = int.from_bytes(hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
            occ = self.seen.get(h, 0)
            self.seen[h] = occ + 1
            out.append(row_uid(self.source, u, t, occ, key))
        return pa.array(out, pa.string())
