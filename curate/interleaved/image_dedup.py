"""`doc_image_dedup`: exact image dedup across documents, on the sha256 the download recorded per image.

A Job: one record per kept image keyed by its sha256; each group keeps the first occurrence (the earliest
document in the input, then position; an image kept by an earlier batch of the same run wins; uids are
hashes, so "smallest uid" was an arbitrary document, not the first) and the others are
marked `duplicate_image` inside their document's `doc_images` (the document itself stays; whether it
still has enough images is `doc_filter`'s call). `image_dup_of` holds, per image, "uid#index" of the
kept copy (null when the image is not a duplicate).
"""
from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

import pyarrow as pa

from curate import schema
from curate.interleaved import _doc
from curate.stage import Job, register

_RECORDS = pa.schema([("key", pa.string()), ("uid", pa.string()), ("part", pa.int32()), ("row", pa.int64()),
                      ("idx", pa.int32()), ("n", pa.int32())])
_EDGES = pa.schema([("uid", pa.string()), ("part", pa.int32()), ("idx", pa.int32()), ("n", pa.int32()),
                    ("dup_of", pa.string())])


@register
class DocImageDedup(Job):
    """Mark byte-identical images (same sha256 of the downloaded bytes) after their first occurrence."""

    name: ClassVar[str] = "doc_image_dedup"
    reads: ClassVar[tuple[str, ...]] = ("doc_images", "row")
    writes: ClassVar[dict[str, pa.DataType]] = {"image_dup_of": pa.list_(pa.string())}
    reasons: ClassVar[dict[str, str]] = {}

    def prepare(self, table: pa.Table) -> pa.Table:
        rows = defaultdict(list)
        for uid, part, row, recs in zip(table.column("uid").to_pylist(), table.column("part").to_pylist(),
                                        table.column("row").to_pylist(), table.column("doc_images").to_pylist()):
            for j, rec in enumerate(recs or ()):
                if rec["status"] == schema.OK and rec["sha256"]:
                    for k, v in zip(_RECORDS.names, (rec["sha256"], uid, part, row, j, len(recs))):
                        rows[k].append(v)
        return pa.table({k: rows.get(k, []) for k in _RECORDS.names}, schema=_RECORDS)

    def reduce_schema(self) -> pa.Schema:
        return _EDGES

    def reduce(self, group: pa.Table) -> pa.Table:
        rows = group.to_pylist()
        keeper = min(rows, key=lambda r: (r["part"] != -1, r["row"], r["uid"], r["idx"]))
        losers = [r for r in rows if r is not keeper and r["part"] != -1]
        ref = f"{keeper['uid']}#{keeper['idx']}"
        return pa.Table.from_pylist([{**{k: r[k] for k in ("uid", "part", "idx", "n")}, "dup_of": ref}
                                     for r in losers], schema=_EDGES)

    def finalize(self, reduced: pa.Table) -> pa.Table:
        """Per document: one ok decision whose image_dup_of lists the kept copy of each duplicate image."""
        docs: dict[str, dict] = {}
        for r in reduced.to_pylist():
            d = docs.setdefault(r["uid"], {"part": r["part"], "dups": [None] * r["n"]})
            d["dups"][r["idx"]] = r["dup_of"]
        return pa.table({"uid": list(docs), "part": pa.array([d["part"] for d in docs.values()], pa.int32()),
                         "status": [schema.OK] * len(docs), "reason": pa.nulls(len(docs), pa.string()),
                         "image_dup_of": pa.array([d["dups"] for d in docs.values()], pa.list_(pa.string()))},
                        schema=self.decision_schema())

    def complete(self, table: pa.Table) -> pa.Table:
        if "image_dup_of" not in table.column_names or table.column("image_dup_of").null_count == table.num_rows:
            return table
        active = schema.active_mask(table).to_pylist()
        dups = table.column("image_dup_of").to_pylist()
        docs = table.column("doc_images").to_pylist()
        payload = table.column("doc_image_bytes").to_pylist() if "doc_image_bytes" in table.column_names else None
        changed = False
        for i, (ok, d) in enumerate(zip(active, dups)):
            if not ok or not d:
                continue
            for j, ref in enumerate(d):
                if ref and docs[i][j]["status"] == schema.OK:
                    docs[i][j].update(status=schema.DROPPED, reason="duplicate_image", error=f"duplicate of image {ref}")
                    if payload is not None and payload[i] is not None:
                        payload[i][j] = None
                    changed = True
        if not changed:
            return table
        table = schema.put_column(table, "doc_images", docs, _doc.IMAGES_T)
        if payload is not None:
            table = schema.put_column(table, "doc_image_bytes", payload, _doc.BYTES_T)
        return table
