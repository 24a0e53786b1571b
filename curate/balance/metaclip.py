"""`metaclip_balance`: MetaCLIP's metadata curation (Xu et al. 2023): match captions against a list of
concept entries, then cap every entry at `t` samples so head concepts stop drowning the tail.

Algorithm (MetaCLIP, "curation" step):
  1. substring-match every caption against the entries (Aho-Corasick over the whole list, one pass per
     caption; `word_boundary` keeps "cat" out of "category");
  2. count the matches of each entry over the corpus: entries with count <= t are tail, the rest head;
  3. a sample is kept if ANY of its entries picks it, where entry e picks each of its samples
     independently with probability min(1, t / count(e)). Tail entries keep all their samples; a head
     entry keeps t in expectation. Samples that match no entry are dropped (`keep_unmatched` keeps them).
The random draw for (sample, entry) is hash(seed, entry, uid) mapped to [0, 1): the outcome does not
depend on partitioning, Ray scheduling or worker count, and a different `seed` gives another draw.

As a Job: `prepare` emits one record per (sample, matched entry) keyed by entry id; `reduce` sees one
entry's records (so it knows count(e)) and draws; `finalize` (driver) ORs the draws per sample and
lists each sample's entries in `balance_entries`; `complete` drops the unmatched rows of each part.
Memory in the driver: the (sample, entry) match pairs as Arrow columns (~30 bytes each), not the corpus.

Entries: `entries` is a file (one entry per line, or a JSON list of strings) or an inline list; without
it the demo's concept vocabulary (colour and shape words) is used. MetaCLIP's own list
(~500k WordNet synsets and Wikipedia uni/bi-grams and titles) is never downloaded: save it as a file and
pass its path. Per-entry counts before and after are in the run report and OUT/balance_counts.parquet.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate import schema
from curate.stage import Job, register

ENTRY_LIST = pa.list_(pa.string())
_AUTOMATA: dict[tuple, tuple[list[str], object]] = {}  # per-process cache: entries source -> (entries, automaton)


def demo_entries() -> list[str]:
    """The default list: the demo corpus' concept vocabulary (colour and shape words). No colour-shape pairs:
    each pair would be a tail entry that keeps all its samples, and balancing a demo would do nothing."""
    from curate.demo.captions import plural
    from curate.demo.images import COLOURS, SHAPES

    return [*COLOURS, *SHAPES, *(plural(s) for s in SHAPES)]


def read_entries(path: str | Path) -> list[str]:
    """Entries from a file or URL (s3://, http(s)://: fetched into this machine's cache): a JSON list of
    strings (.json) or one entry per line; blanks skipped, order kept."""
    from curate.io import storage

    try:
        p = storage.local_file(path, "metaclip_balance.entries")
    except storage.StorageError as err:
        raise ValueError(str(err)) from None
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read entries file {p}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"entries file {p} is not UTF-8 text") from None
    if p.suffix.lower() == ".json":
        try:
            items = json.loads(raw)
        except ValueError as err:
            raise ValueError(f"entries file {p} is not valid JSON: {err}") from None
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError(f"entries file {p} must hold a JSON list of strings")
    else:
        items = raw.splitlines()
    return [x.strip() for x in items if x.strip()]


def _dedup(entries: list[str], lowercase: bool) -> list[str]:
    return list(dict.fromkeys(e.lower() if lowercase else e for e in entries))


def draw(seed: int, entry: str, uid: str) -> float:
    """The (sample, entry) coin in [0, 1): a hash, so every execution path draws the same."""
    h = hashlib.blake2b(f"{seed}\x00{entry}\x00{uid}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


@register
class MetaClipBalance(Job):
    """Balance the corpus over a list of concept entries: cap each entry at about `t` samples."""

    name: ClassVar[str] = "metaclip_balance"
    path_settings: ClassVar[tuple[str, ...]] = ("entries",)  # a file (an inline list is left as it is)
    reads: ClassVar[tuple[str, ...]] = ("text",)
    writes: ClassVar[dict[str, pa.DataType]] = {"balance_entries": ENTRY_LIST}
    reasons: ClassVar[dict[str, str]] = {
        "balance_head_subsampled": "every matched entry is a head entry (more than t matches) and none picked "
                                   "this sample (MetaCLIP balancing)",
        "balance_no_entry": "the caption matches no metadata entry (MetaCLIP balancing; keep_unmatched keeps it)",
    }
    singletons_matter: ClassVar[bool] = True  # an entry with one match is a tail entry: its sample is kept

    entries: str | list[str] | None = None  # file/URL (lines, .json list) or list; None = demo colour/shape words
    t: int = Field(20_000, ge=1)  # MetaCLIP's 400M set used t = 20k over 500k entries
    seed: int = 0  # seed of the per-(sample, entry) draw: another seed keeps other head samples
    keep_unmatched: bool = False  # keep captions that match no entry (MetaCLIP drops them)
    word_boundary: bool = True  # false for languages written without spaces (Chinese, Japanese, Thai)
    lowercase: bool = True  # match case-insensitively (entries and captions lower-cased)

    @field_validator("entries")
    @classmethod
    def _readable(cls, value):
        if isinstance(value, str):
            if not read_entries(value):
                raise ValueError(f"entries file {value} holds no entries")
        elif isinstance(value, list) and not [e for e in value if e.strip()]:
            raise ValueError("entries: the list is empty")
        return value

    # -- matching ---------------------------------------------------------------------------------------
    def _source(self) -> tuple:
        if isinstance(self.entries, str):
            from curate.io import storage

            p = storage.local_file(self.entries, "metaclip_balance.entries")  # a URL's cached copy
            st = p.stat()
            return ("file", str(p.resolve()), st.st_size, st.st_mtime_ns, self.lowercase)
        return ("list", tuple(self.entries or ()), self.lowercase)

    def matcher(self) -> tuple[list[str], object]:
        """(entries, Aho-Corasick automaton), built once per process and entries source."""
        key = self._source()
        if key not in _AUTOMATA:
            import ahocorasick

            if isinstance(self.entries, str):
                raw = read_entries(self.entries)
            else:
                raw = [e.strip() for e in self.entries] if self.entries else demo_entries()
            entries = _dedup([e for e in raw if e], self.lowercase)
            automaton = ahocorasick.Automaton()
            for i, e in enumerate(entries):
                automaton.add_word(e, (i, len(e)))
            automaton.make_automaton()
            _AUTOMATA.clear()  # one list per process is the norm; do not pile up 500k-entry automata
            _AUTOMATA[key] = (entries, automaton)
        return _AUTOMATA[key]

    def match(self, text: str | None, automaton=None) -> list[int]:
        """Ids of the entries found in `text` (sorted, each once)."""
        if not text:
            return []
        if automaton is None:
            _, automaton = self.matcher()
        if self.lowercase:
            text = text.lower()
        found = set()
        n = len(text)
        for end, (i, length) in automaton.iter(text):
            if i in found:
                continue
            if self.word_boundary:
                start = end - length + 1
                if (start > 0 and text[start - 1].isalnum()) or (end + 1 < n and text[end + 1].isalnum()):
                    continue
            found.add(i)
        return sorted(found)

    # -- job ----------------------------------------------------------------------------------------------
    def prepare(self, table: pa.Table) -> pa.Table:
        keys, rows = [], []
        _, automaton = self.matcher()  # once per batch: the cache key of an inline list costs O(entries)
        for r, text in enumerate(table.column("text").to_pylist()):
            for i in self.match(text, automaton):
                keys.append(i)
                rows.append(r)
        take = pa.array(rows, pa.int64())
        return pa.table({"key": pa.array(keys, pa.int64()), "uid": table.column("uid").take(take),
                         "part": table.column("part").take(take)})

    def reduce_schema(self) -> pa.Schema:
        return pa.schema([("uid", pa.string()), ("part", pa.int32()), ("entry", pa.int64()), ("picked", pa.bool_())])

    def reduce(self, group: pa.Table) -> pa.Table:
        n = group.num_rows
        entry_id = group.column("key")[0].as_py()
        uids = group.column("uid").to_pylist()
        if n <= self.t:
            picked = [True] * n  # a tail entry keeps all its samples
        else:
            p = self.t / n
            e = self.matcher()[0][entry_id]  # only head entries need their text (the draw hashes it)
            picked = [draw(self.seed, e, u) < p for u in uids]
        return pa.table({"uid": uids, "part": group.column("part").cast(pa.int32()),
                         "entry": pa.array([entry_id] * n, pa.int64()), "picked": picked}, schema=self.reduce_schema())

    def finalize(self, reduced: pa.Table) -> pa.Table:
        reduced = reduced.filter(pc.not_equal(reduced.column("part"), -1))  # earlier batches are never changed
        if reduced.num_rows == 0:
            return self.decision_schema().empty_table()
        per = (reduced.sort_by([("uid", "ascending"), ("entry", "ascending")])
               .group_by(["uid", "part"], use_threads=False)
               .aggregate([("picked", "any"), ("entry", "list")]))
        entries, _ = self.matcher()
        ids = per.column("entry_list").combine_chunks()
        names = pa.array(entries, pa.string()).take(ids.flatten())
        lists = pa.ListArray.from_arrays(ids.offsets, names)
        keep = per.column("picked_any")
        return pa.table({
            "uid": per.column("uid"), "part": per.column("part"),
            "status": pc.if_else(keep, schema.OK, schema.DROPPED),
            "reason": pc.if_else(keep, pa.scalar(None, pa.string()), "balance_head_subsampled"),
            "balance_entries": lists,
        }).cast(self.decision_schema())

    def complete(self, table: pa.Table) -> pa.Table:
        if self.keep_unmatched:
            return table
        if "balance_entries" not in table.column_names:  # run outside a runner, without the run schema
            table = table.append_column("balance_entries", pa.nulls(table.num_rows, ENTRY_LIST))
        unmatched = pc.and_(schema.active_mask(table), pc.is_null(table.column("balance_entries")))
        if not pc.any(unmatched).as_py():
            return table
        return schema.mark(table, unmatched, schema.DROPPED, self.name, "balance_no_entry")


def binomial_tolerance(count: int, t: int, sigmas: float = 4.0) -> float:
    """How far a head entry's kept count may stray from t by chance: `sigmas` binomial standard deviations."""
    if count <= t:
        return 0.0
    p = t / count
    return sigmas * float(np.sqrt(count * p * (1 - p)))
