"""The numbers behind the report, computed in DuckDB over meta/*.parquet.

Everything here aggregates in SQL (counts, binned histograms, cluster sizes) or takes a bounded,
deterministic sample (ORDER BY hash(uid) LIMIT n), so the cost grows with the columns read, not with
what Python holds: a million-row run returns a few kilobytes to Python.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import numpy as np

# numeric columns that describe bookkeeping or geometry, not a quality score
BOOKKEEPING = {"part", "row", "width", "height", "orig_width", "orig_height", "bytes", "size", "file_size",
               "num_bytes", "seed", "shard_index", "index", "idx", "offset", "timestamp", "mtime"}
BOOKKEEPING_SUFFIXES = ("_id", "_cluster", "_index", "_idx", "_hash", "_bytes", "_row", "_part", "_offset")
FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL", "DECIMAL")
INT_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
STATUS_ORDER = ("ok", "dropped", "failed")


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    """A quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def dicts(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    """The rows of a query as dicts keyed by column name (the grids read cells by name, not position)."""
    cur = con.execute(sql)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, t)) for t in cur.fetchall()]


def columns(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return {r[0]: str(r[1]).upper() for r in con.execute("DESCRIBE samples").fetchall()}


def score_columns(cols: dict[str, str]) -> list[str]:
    """Numeric columns worth a histogram: every float column, plus integer columns named *score*,
    minus ids and size bookkeeping."""
    out = []
    for name, typ in cols.items():
        low = name.lower()
        if low in BOOKKEEPING or low.endswith(BOOKKEEPING_SUFFIXES) or typ.endswith("]"):  # lists: per-image scores
            continue
        if typ.startswith(FLOAT_TYPES) or (typ in INT_TYPES and "score" in low):
            out.append(name)
    return out


def outcome_counts(con) -> list[tuple[str, str | None, str | None, int]]:
    """(status, stage, reason, rows) for every combination present."""
    return [(r[0], r[1], r[2], int(r[3])) for r in con.execute(
        "SELECT status, stage, reason, count(*) FROM samples GROUP BY ALL ORDER BY 4 DESC").fetchall()]


def funnel_steps(counts, recipe_stages: list[str]) -> tuple[list[dict], list[dict]]:
    """The funnel (input, then one step per stage in recipe order) and its per-reason rows.

    Stages that decided rows but are not in the recipe (renamed or from an older batch) follow the recipe's.
    """
    total = sum(n for *_, n in counts)
    removed = [(s, st or "(none)", r or "(none)", n) for s, st, r, n in counts if s != "ok"]
    per_stage: dict[str, dict[str, int]] = {}
    for s, st, _, n in removed:
        d = per_stage.setdefault(st, {"dropped": 0, "failed": 0, "other": 0})
        d[s if s in ("dropped", "failed") else "other"] += n
    order = list(dict.fromkeys(recipe_stages))
    order += sorted((st for st in per_stage if st not in order), key=lambda st: -sum(per_stage[st].values()))
    steps = [{"label": "input", "stage": None, "entering": total, "dropped": 0, "failed": 0, "other": 0,
              "remaining": total}]
    remaining = total
    entering_of = {}
    for st in order:
        d = per_stage.get(st, {"dropped": 0, "failed": 0, "other": 0})
        entering_of[st] = remaining
        gone = d["dropped"] + d["failed"] + d["other"]
        steps.append({"label": f"after {st}", "stage": st, "entering": remaining, **d, "remaining": remaining - gone})
        remaining -= gone
    reasons = [{"status": s, "stage": st, "reason": r, "rows": n, "pct_input": 100.0 * n / total if total else 0.0,
                "pct_stage": 100.0 * n / entering_of[st] if entering_of.get(st) else 0.0}
               for s, st, r, n in removed]
    reasons.sort(key=lambda d: (order.index(d["stage"]), -d["rows"]))
    return steps, reasons


@dataclass
class Hist:
    edges: np.ndarray
    series: dict[str, np.ndarray]  # status -> counts per bin
    stats: dict[str, dict[str, float]]  # status -> n, mean, p05, p50, p95
    clipped: bool


def numeric_hist(con, expr: str, bins: int = 40, integer: bool = False, where: str = "TRUE") -> Hist | None:
    """Histogram of `expr` per status, binned in SQL; the range is the 0.1-99.9% quantiles (tails go in the end bins).

    `expr` is evaluated once into a temporary (status, x) table (16 bytes a row) that the three aggregates share.
    """
    x = f"({expr})::DOUBLE"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _report_hist AS SELECT status, x FROM "
                f"(SELECT status, {x} AS x FROM samples WHERE {where}) WHERE x IS NOT NULL AND isfinite(x)")
    try:
        return _hist_from_table(con, bins, integer)
    finally:
        con.execute("DROP TABLE IF EXISTS _report_hist")


def _hist_from_table(con, bins: int, integer: bool) -> Hist | None:
    base = "FROM _report_hist"
    n, mn, mx, lo, hi = con.execute(f"SELECT count(*), min(x), max(x), approx_quantile(x, 0.001), "
                                    f"approx_quantile(x, 0.999) {base}").fetchone()
    if not n:
        return None
    clipped = False
    if lo is not None and hi is not None and hi > lo and (lo > mn or hi < mx):
        clipped = True
    else:
        lo, hi = mn, mx
    if integer:
        lo, hi = math.floor(lo), math.floor(hi) + 1
        width = max(1, math.ceil((hi - lo) / bins))
        nb = max(1, math.ceil((hi - lo) / width))
    else:
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        nb, width = bins, (hi - lo) / bins
    # integer values sit in the middle of their bins
    edges = (lo - 0.5 if integer else lo) + width * np.arange(nb + 1, dtype=float)
    b = f"least(greatest(floor((x - {float(lo)!r}) / {float(width)!r}), 0), {nb - 1})::INTEGER"
    series = {}
    for status, bi, c in con.execute(f"SELECT status, {b} AS b, count(*) {base} GROUP BY ALL").fetchall():
        series.setdefault(status, np.zeros(nb, float))[bi] += c
    stats = {}
    for status, cnt, mean, p05, p50, p95 in con.execute(
            f"SELECT status, count(*), avg(x), approx_quantile(x, 0.05), approx_quantile(x, 0.5), "
            f"approx_quantile(x, 0.95) {base} GROUP BY status").fetchall():
        stats[status] = {"n": cnt, "mean": mean, "p05": p05, "p50": p50, "p95": p95}
    order = [s for s in STATUS_ORDER if s in series] + sorted(s for s in series if s not in STATUS_ORDER and s)
    return Hist(edges, {s: series[s] for s in order}, stats, clipped)


MAX_WORDS = 4096  # longer captions count in the last bin


def word_hist(parts: list, bins: int = 50, batch_rows: int = 131_072) -> Hist | None:
    """Caption length in words (str.split() semantics) per status, over every row.

    Streams (status, text) record batches from the Parquet parts and counts with Arrow's vectorised
    whitespace split: about a second per million rows, memory bounded by one batch. (A regex split in
    DuckDB is several times slower.)
    """
    import pyarrow.compute as pc

    from curate.io import storage

    counts: dict[str, np.ndarray] = {}
    sums: dict[str, int] = {}
    ds = storage.dataset(parts)  # local paths or s3://... URLs (a run directory on an object store)
    if "text" not in ds.schema.names or "status" not in ds.schema.names:
        return None
    for batch in ds.to_batches(columns=["status", "text"], batch_size=batch_rows):
        text = pc.utf8_trim_whitespace(batch.column(1))
        words = pc.fill_null(pc.if_else(pc.equal(text, ""), 0, pc.list_value_length(pc.utf8_split_whitespace(text))), 0)
        status = batch.column(0)
        for st in pc.unique(status).to_pylist():
            if st is None:
                continue
            w = pc.filter(words, pc.equal(status, st)).to_numpy(zero_copy_only=False).astype(np.int64)
            counts[st] = counts.get(st, 0) + np.bincount(np.minimum(w, MAX_WORDS), minlength=MAX_WORDS + 1)
            sums[st] = sums.get(st, 0) + int(w.sum())
    if not counts:
        return None
    total = sum(counts.values())
    cum = np.cumsum(total) / total.sum()
    lo = int(np.argmax(total > 0))
    top = int(np.nonzero(total)[0][-1])
    hi = int(np.searchsorted(cum, 0.999))  # last bin holds the 0.1% longest
    clipped = hi < top
    width = max(1, -(-(hi + 1 - lo) // bins))
    nb = max(1, -(-(hi + 1 - lo) // width))
    edges = lo - 0.5 + width * np.arange(nb + 1, dtype=float)
    series, stats = {}, {}
    for st in [s for s in STATUS_ORDER if s in counts] + sorted(s for s in counts if s not in STATUS_ORDER):
        c = counts[st]
        idx = np.minimum((np.arange(len(c)) - lo) // width, nb - 1).clip(0)
        series[st] = np.bincount(idx, weights=c, minlength=nb)[:nb].astype(float)
        n = int(c.sum())
        cs = np.cumsum(c)
        q = lambda f: float(np.searchsorted(cs, f * n, side="left")) if n else None  # noqa: E731
        stats[st] = {"n": n, "mean": sums[st] / n if n else None, "p05": q(0.05), "p50": q(0.5), "p95": q(0.95)}
    return Hist(edges, series, stats, clipped)


def size_sample(con, wcol: str, hcol: str, per_status: int = 5000) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """A deterministic sample of (width, height) per status, with each status' total."""
    out = {}
    cond = f"{q(wcol)} > 0 AND {q(hcol)} > 0"
    totals = dict(con.execute(f"SELECT status, count(*) FROM samples WHERE {cond} GROUP BY status").fetchall())
    for status in [s for s in STATUS_ORDER if s in totals]:
        rows = con.execute(f"SELECT {q(wcol)}, {q(hcol)} FROM samples WHERE status = {lit(status)} AND {cond} "
                           f"ORDER BY hash(uid) LIMIT {per_status}").fetchnumpy()
        out[status] = (rows[wcol].astype(float), rows[hcol].astype(float), int(totals[status]))
    return out


@dataclass
class Grid:
    """Counts of (width, height) on log-spaced bins per status, over every row (not a sample)."""
    x_edges: np.ndarray  # pixels
    y_edges: np.ndarray
    counts: dict[str, np.ndarray]  # status -> (len(y_edges) - 1, len(x_edges) - 1)


def size_grid(con, wcol: str, hcol: str, bins: int = 48) -> Grid | None:
    """A 2-D histogram of log10(width) x log10(height) per status, binned in SQL, so the plot of a
    million-row run is as readable as that of a hundred rows and Python holds only bins x bins counts."""
    w, h = f"log10({q(wcol)})", f"log10({q(hcol)})"
    cond = f"{q(wcol)} > 0 AND {q(hcol)} > 0"
    lx, hx, ly, hy = con.execute(f"SELECT min({w}), max({w}), min({h}), max({h}) FROM samples WHERE {cond}").fetchone()
    if lx is None:
        return None
    lx, hx, ly, hy = lx - 0.01, hx + 0.01, ly - 0.01, hy + 0.01  # a single size still gets a bin of width
    dx, dy = (hx - lx) / bins, (hy - ly) / bins
    bx = f"least(floor(({w} - {lx!r}) / {dx!r}), {bins - 1})::INTEGER"
    by = f"least(floor(({h} - {ly!r}) / {dy!r}), {bins - 1})::INTEGER"
    counts: dict[str, np.ndarray] = {}
    for status, i, j, n in con.execute(f"SELECT status, {bx}, {by}, count(*) FROM samples WHERE {cond} "
                                       "GROUP BY ALL").fetchall():
        counts.setdefault(status, np.zeros((bins, bins)))[j, i] += n
    order = [s for s in STATUS_ORDER if s in counts] + sorted(s for s in counts if s not in STATUS_ORDER and s)
    return Grid(10 ** (lx + dx * np.arange(bins + 1)), 10 ** (ly + dy * np.arange(bins + 1)),
                {s: counts[s] for s in order})


def cluster_size_counts(con, key_sql: str, where: str = "TRUE") -> list[tuple[int, int]]:
    """[(cluster size, number of clusters)] for clusters keyed by `key_sql`."""
    return [(int(a), int(b)) for a, b in con.execute(
        f"SELECT size, count(*) FROM (SELECT {key_sql} AS k, count(*) AS size FROM samples WHERE {where} "
        f"GROUP BY k) GROUP BY size ORDER BY size").fetchall()]
