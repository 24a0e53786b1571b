"""`exact_dedup`: keep one sample per identical image (sha256 of downloaded bytes), text, or pair.

A Job: every active row maps to one record keyed by its hash; each group keeps one sample (`keep`: the
smallest uid, or the earliest input row; a sample already kept by an earlier run of the same output always
wins) and drops the rest with the keeper's uid in `dup_of`. The grouping is a shuffle on Ray, so no single process holds the corpus' hashes.
"""
from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from curate import schema
from curate.filters.caption_text import normalise
from curate.stage import Job, register

_REASON = {"image": "duplicate_image", "text": "duplicate_text", "pair": "duplicate_pair"}


def text_hash(text: str | None) -> str:
    return hashlib.sha1(normalise(text or "").encode("utf-8")).hexdigest()


EMPTY_TEXT = text_hash("")


@register
class ExactDedup(Job):
    """Drop exact duplicates (by image bytes, normalised text, or both), keeping the smallest uid or the earliest row."""

    name: ClassVar[str] = "exact_dedup"
    reads: ClassVar[tuple[str, ...]] = ("sha256",)
    writes: ClassVar[dict[str, pa.DataType]] = {"dup_of": pa.string()}
    reasons: ClassVar[dict[str, str]] = {r: schema.REASONS[r] for r in _REASON.values()}

    by: Literal["image", "text", "pair"] = "image"  # image: sha256 of bytes; text: normalised caption; pair: both
    # which copy stays: "first" = the smallest uid (a hash: the same keeper whatever the input order, but in
    # effect a random copy), "earliest" = the first in input order (`row`), what a web corpus' original
    # usually is (copies with other captions come later)
    keep: Literal["first", "earliest"] = "first"  # first: the smallest uid (any input order, same keeper); earliest: first in input order

    def needs(self) -> tuple[str, ...]:
        cols = {"image": ("sha256",), "text": ("text",), "pair": ("sha256", "text")}[self.by]
        return cols + ("row",) if self.keep == "earliest" else cols

    def prepare(self, table: pa.Table) -> pa.Table:
        if self.by == "image":
            keys = table.column("sha256").to_pylist()
        else:
            th = [text_hash(t) for t in table.column("text").to_pylist()]
            if self.by == "text":  # rows without a caption are not copies of each other (all but one would go)
                keys = [None if h == EMPTY_TEXT else h for h in th]
            else:  # a pair needs image bytes: a null sha256 is no key, never the string "None"
                keys = [None if s is None else f"{s}:{t}" for s, t in zip(table.column("sha256").to_pylist(), th)]
        rank = table.column("row").cast(pa.int64()) if self.keep == "earliest" else pa.nulls(table.num_rows, pa.int64())
        out = pa.table({"key": pa.array(keys, pa.string()), "uid": table.column("uid"), "part": table.column("part"),
                        "rank": rank})
        return out.filter(pc.is_valid(out.column("key")))

    def reduce(self, group: pa.Table) -> pa.Table:
        if group.num_rows < 2:
            return self.decision_schema().empty_table()
        rows = group.select(["uid", "part", "rank"]).to_pylist()
        prior = [r for r in rows if r["part"] == -1]
        keeper = min(prior or rows, key=lambda r: (r["rank"] if r["rank"] is not None else -1, r["uid"]))["uid"]
        losers = [r for r in rows if r["uid"] != keeper and r["part"] != -1]
        return pa.table(
            {
                "uid": [r["uid"] for r in losers],
                "part": pa.array([r["part"] for r in losers], pa.int32()),
                "status": [schema.DROPPED] * len(losers),
                "reason": [_REASON[self.by]] * len(losers),
                "dup_of": [keeper] * len(losers),
            },
            schema=self.decision_schema(),
        )
