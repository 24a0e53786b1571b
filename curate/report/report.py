"""`OUT/report.html`: one self-contained page (inline CSS, base64 PNG plots and JPEG thumbnails) about a run.

Sections: header (name, status, counts, versions, timings), funnel (rows left after each stage in recipe
order, with every drop and failure reason), distributions (score columns, original image size as a scatter
or, for big runs, a 2-D histogram, caption length; kept vs dropped), duplicates (per dedup stage: cluster
sizes and the largest clusters' keeper beside its dropped copies; the sizes of every *_cluster column),
samples (kept samples from the shards, examples of the top failure reasons), dropped samples (a grid per
dropping stage from the thumbnails stored in thumbs/, with reason and score), then any extra sections a
caller passes in. docs/report.md describes them.

All aggregation runs in DuckDB over meta/*.parquet; Python only ever holds binned counts and a few
thousand sampled rows, so a report over a million-row run takes seconds and little memory.
"""
from __future__ import annotations

import html
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from curate import schema
from curate.catalog import CatalogError, connect
from curate.io import atomic, storage
from curate.io.manifest import Manifest, ManifestError
from curate.io.rundir import RunDir, RunDirBusy
from curate.report import data, plots
from curate.report.thumbs import jpeg_uri, read_thumbnails

log = logging.getLogger("curate.report")

KEPT_GRID = 24
REASON_EXAMPLES = 4
TOP_REASONS = 6
KEPT_SHARDS = 4  # the kept grid comes from this many shards, so only a few tars are scanned
KEPT_HEAD = 2000  # ... from the first this many kept rows of each (tar members follow row order: short scans)
THUMB_HEADERS = 120_000  # at most this many tar headers are read per section (~40 shards of 1,000 samples)
SCATTER_MAX = 3000  # above this many sized rows the size plot is a 2-D histogram (a scatter would overplot)
DROPPED_GRID = 24  # tiles per dropping stage
DUP_CLUSTERS = 8  # clusters shown side by side per dedup stage
DUP_MEMBERS = 5  # dropped copies shown next to each keeper


class ReportError(Exception):
    """A problem that stops the report; the message is one line for the user."""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _n(v) -> str:
    return f"{int(v):,}"


def _pct(part, whole) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


def _num(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _short(text, limit: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """rows are already-escaped HTML cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(uri: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" alt="{esc(alt)}" src="{uri}">'


@dataclass
class _Run:
    run: RunDir
    manifest: Manifest
    recipe: dict
    stages: list[str]
    con: object = None
    cols: dict[str, str] = field(default_factory=dict)
    counts: list = field(default_factory=list)
    total: int = 0
    kept: int = 0
    thumbs: bool | None = None  # whether thumbs/ holds dropped rows' thumbnails (a `thumbs` view), once checked


def _load_recipe(run: RunDir) -> tuple[dict, list[str]]:
    if not run.recipe.exists():
        return {}, []
    try:
        recipe = yaml.safe_load(run.recipe.read_text()) or {}
    except yaml.YAMLError:
        return {}, []
    names = []
    for entry in recipe.get("stages") or []:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict) and entry:
            names.append(next(iter(entry)))
    return recipe, names


# --------------------------------------------------------------------------------------------------------
# sections: each returns (id, title, html)


def _header(r: _Run, elapsed_note: str = "") -> str:
    m = r.manifest
    dropped = sum(n for s, *_, n in r.counts if s == schema.DROPPED)
    failed = sum(n for s, *_, n in r.counts if s == schema.FAILED)
    cards = [("input rows", _n(r.total), "", "total"),
             ("kept", _n(r.kept), _pct(r.kept, r.total), "kept"),
             ("dropped", _n(dropped), _pct(dropped, r.total), "dropped"),
             ("failed", _n(failed), _pct(failed, r.total), "failed")]
    card_html = "".join(
        f'<div class="card {cls}"><div class="label">{esc(label)}</div>'
        f'<div class="value" id="count-{cls}">{val}</div><div class="pct">{esc(pct)}</div></div>'
        for label, val, pct, cls in cards)
    facts = [("status", m.status), ("created", m.created or "–"),
             ("updated", m.updated or "–"), ("modality", r.recipe.get("modality", "–")),
             ("input", m.input.path or (r.recipe.get("input") or {}).get("path", "–")),
             ("run directory", str(r.run.root.resolve()))]
    if len(m.batches) > 1:
        facts.append(("batches", ", ".join(f"{b.kind} ({b.status})" for b in m.batches)))
    if m.note:
        facts.append(("note", m.note))
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)

    notes = []
    mc = m.counts
    if mc and (mc.rows != r.total or mc.kept != r.kept):
        notes.append(f'<p class="warn">manifest counts (rows {esc(mc.rows)}, kept {esc(mc.kept)}) '
                     f"differ from meta/*.parquet (rows {r.total}, kept {r.kept}); the report follows the "
                     f"metadata. Run <code>curate validate</code>.</p>")

    timings = m.timings
    t_html = ""
    if timings:
        top = max([float(v) for v in timings.values() if isinstance(v, (int, float))] or [1.0]) or 1.0
        total_t = sum(float(v) for v in timings.values() if isinstance(v, (int, float)))
        rows = []
        for phase, secs in timings.items():
            s = float(secs) if isinstance(secs, (int, float)) else 0.0
            rows.append([esc(phase), f"{s:,.2f} s",
                         f'<div class="bar" style="width:{max(0.5, 100 * s / top):.1f}%"></div>'])
        rows.append(["<b>total</b>", f"<b>{total_t:,.2f} s</b>", ""])
        if total_t > 0 and r.total:
            rows.append(["throughput", f"{r.total / total_t:,.1f} rows/s", ""])
        t_html = "<h3>Timings</h3>" + _table(["phase", "seconds", ""], rows, "timings")
    t_html += _stage_timings_html(m.stage_timings or {}, esc)
    versions = m.versions
    v_html = ("<h3>Versions</h3><p class='versions'>" +
              " · ".join(f"<span><b>{esc(k)}</b> {esc(v)}</span>" for k, v in versions.items()) + "</p>"
              ) if versions else ""
    recipe_html = ""
    if r.run.recipe.exists():
        recipe_html = ("<details><summary>recipe.yaml</summary><pre>" + esc(r.run.recipe.read_text()) +
                       "</pre></details>")
    return (f'<div class="cards">{card_html}</div>{"".join(notes)}<table class="facts">{facts_html}</table>'
            f'<div class="two">{"<div>" + t_html + "</div>" if t_html else ""}<div>{v_html}</div></div>{recipe_html}')


def _funnel(r: _Run) -> str:
    steps, reasons = data.funnel_steps(r.counts, r.stages)
    out = [_img(plots.funnel(steps), "funnel: rows remaining after each stage")]
    rows = []
    for s in steps:
        gone = s["dropped"] + s["failed"] + s.get("other", 0)
        rows.append([esc(s["label"]), _n(s["entering"]), _n(s["dropped"]), _n(s["failed"]),
                     f'<span class="remaining" data-stage="{esc(s["stage"] or "input")}">{_n(s["remaining"])}</span>',
                     _pct(gone, s["entering"]) if s["stage"] else "", _pct(s["remaining"], r.total)])
    out.append(_table(["step", "entering", "dropped", "failed", "remaining", "removed here", "% of input"],
                      rows, "funnel num"))
    final = steps[-1]["remaining"]
    if final != r.kept:
        out.append(f'<p class="warn">the funnel ends at {_n(final)} rows but {_n(r.kept)} rows are kept '
                   "(rows with another status are still in flight).</p>")
    if reasons:
        top = sorted(reasons, key=lambda d: -d["rows"])[:15]
        out.append("<h3>Reasons</h3>")
        out.append(_img(plots.reasons([(d["status"], f'{d["stage"]}/{d["reason"]}', d["rows"]) for d in top]),
                        "top drop and failure reasons"))
        docs = _reason_docs()
        rows = [[esc(d["stage"]), f'<span class="st {esc(d["status"])}">{esc(d["status"])}</span>',
                 f'<code>{esc(d["reason"])}</code>', _n(d["rows"]), f'{d["pct_input"]:.2f}%',
                 f'{d["pct_stage"]:.2f}%', esc(docs.get(d["reason"], ""))] for d in reasons]
        out.append(_table(["stage", "outcome", "reason", "rows", "% of input", "% of stage input", "meaning"],
                          rows, "reasons num"))
    else:
        out.append("<p>No row was dropped or failed.</p>")
    return "".join(out)


def _reason_docs() -> dict[str, str]:
    """The declared reason vocabulary (importing the built-in steps declares theirs)."""
    try:
        from curate.stage import load_builtin_steps

        load_builtin_steps()
    except Exception:  # noqa: BLE001 - descriptions are a nicety; a broken optional import must not cost the report
        log.debug("report: could not load the built-in steps' reason codes", exc_info=True)
    return dict(schema.REASONS)


def _stats_table(h: data.Hist) -> str:
    rows = [[esc(plots.LABELS.get(s, s)), _n(st["n"]), _num(st["mean"]), _num(st["p05"]), _num(st["p50"]),
             _num(st["p95"])] for s, st in ((s, h.stats[s]) for s in h.series if s in h.stats)]
    return _table(["group", "n", "mean", "p5", "median", "p95"], rows, "small num")


def _distributions(r: _Run) -> str:
    out = []
    scores = data.score_columns(r.cols)
    figs = []
    for col in scores:
        h = data.numeric_hist(r.con, data.q(col))
        if h is None:
            figs.append(f'<div class="fig"><p class="muted">{esc(col)}: no values</p></div>')
            continue
        note = " (0.1–99.9% range; tails in the end bins)" if h.clipped else ""
        figs.append('<div class="fig">' + _img(plots.histogram(h.edges, h.series, col + note, col), col) +
                    _stats_table(h) + "</div>")
    out.append("<h3>Scores</h3>")
    out.append('<div class="figs">' + "".join(figs) + "</div>" if figs else
               "<p class='muted'>No score columns in this run (none of the metadata's float columns is a score).</p>")

    out.append("<h3>Images and captions</h3>")
    figs = []
    wcol, hcol = ("orig_width", "orig_height") if "orig_width" in r.cols and "orig_height" in r.cols else (
        ("width", "height") if "width" in r.cols and "height" in r.cols else (None, None))
    if wcol:
        figs.append(_size_plot(r, wcol, hcol))
        w, hh = data.q(wcol), data.q(hcol)
        h = data.numeric_hist(r.con, f"log10(least({w}, {hh}))", where=f"{w} > 0 AND {hh} > 0")
        if h is not None:
            figs.append('<div class="fig">' + _img(plots.histogram(h.edges, h.series, "shorter side",
                                                                   f"min({wcol}, {hcol}) px", log10_edges=True),
                                                   "shorter side")
                        + "</div>")
    if "text" in r.cols:
        h = data.word_hist(sorted(r.run.meta.glob("part-*.parquet")))
        if h is not None:
            note = " (longest 0.1% in the last bin)" if h.clipped else ""
            figs.append('<div class="fig">' + _img(plots.histogram(h.edges, h.series, "caption length" + note,
                                                                   "words"), "caption length") +
                        _stats_table(h) + "</div>")
    out.append('<div class="figs">' + "".join(figs) + "</div>" if figs else "<p class='muted'>Nothing to plot.</p>")
    return "".join(out)


def _size_plot(r: _Run, wcol: str, hcol: str, scatter_max: int | None = None) -> str:
    """Original sizes: every point of a small run as a scatter, a 2-D histogram over all rows of a bigger one."""
    scatter_max = SCATTER_MAX if scatter_max is None else scatter_max
    sized = r.con.execute(f"SELECT count(*) FROM samples WHERE {data.q(wcol)} > 0 AND {data.q(hcol)} > 0").fetchone()[0]
    if sized <= scatter_max:
        pts = data.size_sample(r.con, wcol, hcol, per_status=max(scatter_max, 1))
        return ('<div class="fig">' + _img(plots.scatter_sizes(pts), "original image sizes", "plot size-scatter")
                + "</div>") if pts else ""
    g = data.size_grid(r.con, wcol, hcol)
    if g is None:
        return ""
    return ('<div class="fig wide">' + _img(plots.size_density(g.x_edges, g.y_edges, g.counts),
                                           "original image sizes (2-D histogram)", "plot size-density") + "</div>")


CLUSTER_COLUMNS = {"minhash_cluster": "MinHash text near-duplicate", "image_cluster": "perceptual image near-duplicate",
                   "semantic_cluster": "semantic (embedding) near-duplicate"}


def _duplicates(r: _Run) -> str:
    """One part per dedup stage (the rows it dropped with `dup_of`), then the cluster sizes of each *_cluster column."""
    out = []
    stages = []
    if "dup_of" in r.cols and "stage" in r.cols:
        stages = [s for (s,) in r.con.execute(
            "SELECT stage FROM samples WHERE dup_of IS NOT NULL GROUP BY stage ORDER BY min(uid)").fetchall()]
    first = True
    for stage in stages:
        where = f"dup_of IS NOT NULL AND stage = {data.lit(stage)}"
        sizes = [(s + 1, c) for s, c in data.cluster_size_counts(r.con, "dup_of", where)]
        n_clusters = sum(c for _, c in sizes)
        n_rows = sum(s * c for s, c in sizes)
        n_dups = n_rows - n_clusters
        ident = ' id="dup-clusters"' if first else ""
        out.append(f"<h3>{esc(stage)}</h3><p>Duplicates dropped by <code>{esc(stage)}</code> (<code>dup_of</code>): "
                   f"<b{ident}>{_n(n_clusters)}</b> clusters of two or more rows, holding {_n(n_rows)} rows; "
                   f"{_n(n_dups)} rows point at the sample kept"
                   f"{'' if not sizes else f', largest cluster {_n(max(s for s, _ in sizes))} rows'}.</p>")
        first = False
        if not sizes:
            continue
        out.append(_img(plots.cluster_sizes(sizes, f"{stage} cluster sizes (clusters of 2+)"), f"{stage} cluster sizes"))
        out.append(_dup_sets(r, stage, where))
    for col in [c for c in r.cols if c.endswith("_cluster")]:
        what = CLUSTER_COLUMNS.get(col, col.removesuffix("_cluster"))
        sizes = data.cluster_size_counts(r.con, data.q(col), f"{data.q(col)} IS NOT NULL")
        multi = [(s, c) for s, c in sizes if s > 1]
        out.append(f"<p>{esc(what)} clusters (<code>{esc(col)}</code>, every row the job saw): "
                   f"{_n(sum(c for _, c in sizes))} clusters, {_n(sum(c for _, c in multi))} with two or more "
                   f"rows.</p>")
        if sizes:
            out.append(_img(plots.cluster_sizes(sizes, f"{col} sizes"), f"{col} sizes"))
    if not out:
        out.append("<p class='muted'>This run has no duplicate columns (<code>dup_of</code>, "
                   "<code>*_cluster</code>).</p>")
    return "".join(out)


def _has_thumbs(r: _Run) -> bool:
    """Whether the run stored thumbnails of dropped rows (thumbs/part-*.parquet, the catalog's `thumbs` view)."""
    if r.thumbs is None:  # the catalog makes the view when thumbs/ has parts
        r.thumbs = bool(r.con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'thumbs'").fetchone()[0])
    return r.thumbs


def _dup_sets(r: _Run, stage: str, where: str) -> str:
    """The largest clusters of a dedup stage, each as its keeper beside up to DUP_MEMBERS of the dropped copies.

    Clusters with stored thumbnails of their copies come first (the part writer stores whole clusters), then
    by size; the keeper's image comes from its shard (or from thumbs/ when a later stage dropped it)."""
    stored = _has_thumbs(r)
    shown = (f"LEFT JOIN (SELECT dup_of, count(*) AS n FROM thumbs WHERE stage = {data.lit(stage)} GROUP BY dup_of) t "
             "ON t.dup_of = c.k " if stored else "")
    top = r.con.execute(
        f"SELECT c.k, c.size, s.status, s.text, s.shard, s.key FROM "
        f"(SELECT dup_of AS k, count(*) + 1 AS size FROM samples WHERE {where} GROUP BY dup_of) c {shown}"
        f"LEFT JOIN samples s ON s.uid = c.k ORDER BY {'coalesce(t.n, 0) > 0 DESC, ' if stored else ''}"
        f"c.size DESC, hash(c.k) LIMIT {DUP_CLUSTERS}").fetchall()
    if not top:
        return ""
    keys = [t[0] for t in top]
    members: dict[str, list[tuple]] = {}
    if stored:
        in_list = ", ".join(data.lit(k) for k in keys)
        for k, uid, text, thumb in r.con.execute(
                f"SELECT t.dup_of, t.uid, s.text, t.thumb FROM thumbs t LEFT JOIN samples s ON s.uid = t.uid "
                f"WHERE t.stage = {data.lit(stage)} AND t.dup_of IN ({in_list}) "
                f"QUALIFY row_number() OVER (PARTITION BY t.dup_of ORDER BY hash(t.uid)) <= {DUP_MEMBERS} "
                "ORDER BY t.dup_of, hash(t.uid)").fetchall():
            members.setdefault(k, []).append((uid, text, thumb))
        keeper_thumbs = {u: th for u, th in r.con.execute(
            f"SELECT uid, any_value(thumb) FROM thumbs WHERE uid IN ({in_list}) GROUP BY uid").fetchall()}
    else:
        keeper_thumbs = {}
    wanted: dict[str, set[str]] = {}
    for _, _, _, _, shard, key in top:
        if shard and key:
            wanted.setdefault(shard, set()).add(key)
    from_shards = _shard_thumbnails(r, wanted)
    sets = []
    for k, size, status, text, shard, key in top:
        thumb = from_shards.get((shard, key)) or (jpeg_uri(keeper_thumbs[k]) if keeper_thumbs.get(k) else None)
        tiles = [_tile(thumb, text, f"keeper {k} ({status or 'not in meta'})", cls="keeper")]
        mine = members.get(k, [])
        tiles += [_tile(jpeg_uri(th) if th else None, mtext, f"copy {uid}", cls="copy") for uid, mtext, th in mine]
        rest = size - 1 - len(mine)
        more = (f'<div class="more">+{_n(rest)} {"more " if mine else ""}cop{"y" if rest == 1 else "ies"}'
                f'{" (no thumbnail stored)" if rest else ""}</div>') if rest else ""
        sets.append(f'<div class="dupset"><div class="dupsize">{_n(size)} rows</div>{"".join(tiles)}{more}</div>')
    return (f"<h4>Largest {esc(stage)} clusters: keeper (green) beside its dropped copies (red)</h4>"
            f'<div class="dupsets">{"".join(sets)}</div>')


def _tile(thumb: str | None, text, info: str, extra: str = "", cls: str = "", noimg: str = "no image stored") -> str:
    pic = (_img(thumb, _short(text, 80), "thumb") if thumb else f'<div class="noimg">{esc(noimg)}</div>')
    return (f'<figure class="tile {cls}">{pic}<figcaption><span class="cap" title="{esc(_short(text, 500))}">'
            f'{esc(_short(text, 160))}</span><span class="info">{esc(info)}</span>{extra}</figcaption></figure>')


def _score_info(row: dict, scores: list[str]) -> str:
    return " · ".join(f"{c} {_num(row[c])}" for c in scores if row.get(c) is not None)


def _shard_thumbnails(r: _Run, wanted: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """Thumbnails of kept samples from their shards, unless the manifest says no committed part holds an
    image (a text-only run): then reading up to THUMB_HEADERS tar headers per section would find nothing."""
    parts = [p for p in r.manifest.parts.values() if p.committed]
    if not wanted or (parts and all(p.images == 0 for p in parts)):
        return {}
    return read_thumbnails(r.run.root, wanted, max_headers=THUMB_HEADERS)


def _samples(r: _Run) -> str:
    out = []
    scores = [c for c in data.score_columns(r.cols)][:4]
    score_sel = "".join(f", {data.q(c)}" for c in scores)
    has_place = "shard" in r.cols and "key" in r.cols
    # kept: a deterministic sample from a handful of shards, so only a few tars are opened
    kept_rows = []
    if r.kept and has_place:
        shards = [s for (s,) in r.con.execute(
            "SELECT shard FROM (SELECT DISTINCT shard FROM kept WHERE shard IS NOT NULL) ORDER BY hash(shard) "
            f"LIMIT {KEPT_SHARDS}").fetchall()]
        if shards:
            in_list = ", ".join(data.lit(s) for s in shards)
            order = "part, \"row\"" if "part" in r.cols and "row" in r.cols else "key"
            kept_rows = data.dicts(r.con,
                f"SELECT uid, text, shard, key{score_sel} FROM (SELECT *, row_number() OVER "
                f"(PARTITION BY shard ORDER BY {order}) AS _rn FROM kept WHERE shard IN ({in_list})) "
                f"WHERE _rn <= {KEPT_HEAD} ORDER BY hash(uid) LIMIT {KEPT_GRID}")
    wanted: dict[str, set[str]] = {}
    for row in kept_rows:
        wanted.setdefault(row["shard"], set()).add(row["key"])
    thumbs = _shard_thumbnails(r, wanted)
    out.append(f"<h3>Kept samples ({_n(len(kept_rows))} of {_n(r.kept)})</h3>")
    if kept_rows:
        tiles = [_tile(thumbs.get((row["shard"], row["key"])), row["text"],
                       _score_info(row, scores) or row["uid"]) for row in kept_rows]
        out.append('<div class="grid">' + "".join(tiles) + "</div>")
    else:
        out.append("<p class='muted'>No sample was kept.</p>")
    # failures: the top reasons, a few examples each (a failed row has no image: its error says why)
    top = [(s, st, rs, n) for s, st, rs, n in r.counts if s == schema.FAILED][:TOP_REASONS]
    if top:
        out.append("<h3>Failed examples</h3>")
    sel = ", ".join(data.q(c) for c in ["uid", "text", *_EXTRA_COLS, *scores] if c in r.cols)
    for s, st, rs, n in top:
        cond = " AND ".join([f"status = {data.lit(s)}",
                             f"stage = {data.lit(st)}" if st is not None else "stage IS NULL",
                             f"reason = {data.lit(rs)}" if rs is not None else "reason IS NULL"])
        examples = data.dicts(r.con, f"SELECT {sel} FROM samples WHERE {cond} ORDER BY hash(uid) LIMIT {REASON_EXAMPLES}")
        out.append(f'<h4><span class="st {esc(s)}">{esc(s)}</span> {esc(st)} / <code>{esc(rs)}</code> '
                   f'<span class="muted">({_n(n)} rows)</span></h4>')
        out.append('<div class="grid">' + "".join(_example_tile(row, scores, None, noimg="failed: no image")
                                                  for row in examples) + "</div>")
    return "".join(out)


_EXTRA_COLS = ("url", "error", "dup_of", "orig_width", "orig_height")


def _example_tile(row: dict, scores: list[str], thumb: str | None, show_reason: bool = False,
                  noimg: str = "no image stored") -> str:
    """A dropped or failed row's tile: image if any, caption, then reason, size, the scores, error and url."""
    bits = [row["reason"]] if show_reason and row.get("reason") else []
    if row.get("orig_width") and row.get("orig_height"):
        bits.append(f'{row["orig_width"]}×{row["orig_height"]}')
    sc = _score_info(row, scores)
    if sc:
        bits.append(sc)
    if row.get("dup_of"):
        bits.append(f'duplicate of {row["dup_of"]}')
    extra = ""
    if row.get("error"):
        extra += f'<span class="err">{esc(_short(row["error"], 200))}</span>'
    if row.get("url"):
        extra += f'<span class="url">{esc(_short(row["url"], 120))}</span>'
    return _tile(thumb, row.get("text"), " · ".join(bits) or row["uid"], extra, noimg=noimg)


def _stage_scores(stage: str, cols: dict[str, str]) -> list[str]:
    """The numeric columns behind a stage's decision (what it reads or writes), so a tile shows why it was dropped;
    width and height are shown as the original size instead."""
    _reason_docs()  # loads the built-in steps
    from curate.stage import REGISTRY

    cls = REGISTRY.get(stage)
    names = [*getattr(cls, "reads", ()), *getattr(cls, "writes", {})] if cls else []
    numeric = data.FLOAT_TYPES + data.INT_TYPES
    return [c for c in dict.fromkeys(names) if c in cols and c not in ("width", "height", "row", "part")
            and cols[c].startswith(numeric) and not cols[c].endswith("]")]


def _dropped(r: _Run) -> str:
    """One grid per dropping stage (recipe order): stored thumbnails of up to DROPPED_GRID of its dropped rows,
    spread over its reasons, each with the reason and the score that dropped it."""
    per_stage: dict[str, dict[str, int]] = {}
    for s, st, rs, n in r.counts:
        if s == schema.DROPPED:
            per_stage.setdefault(st or "(none)", {})[rs or "(none)"] = n
    if not per_stage:
        return "<p class='muted'>No row was dropped.</p>"
    order = [st for st in dict.fromkeys(r.stages) if st in per_stage]
    order += sorted((st for st in per_stage if st not in order), key=lambda st: -sum(per_stage[st].values()))
    general = data.score_columns(r.cols)[:2]
    stored = _has_thumbs(r)
    out = [] if stored else ["<p class='muted'>This run stored no thumbnails of dropped rows (thumbs/; "
                             "output.dropped_thumbnails is 0, or the run predates them): captions only.</p>"]
    for st in order:
        reasons = per_stage[st]
        scores = list(dict.fromkeys(_stage_scores(st, r.cols) + general))[:3]
        cols = [c for c in ["uid", "text", "reason", *_EXTRA_COLS, *scores] if c in r.cols]
        sel = ", ".join(f"s.{data.q(c)}" for c in cols)
        rows = []
        if stored:
            rows = data.dicts(r.con,
                f"SELECT {sel}, p.thumb FROM (SELECT uid, thumb, row_number() OVER (PARTITION BY reason "
                f"ORDER BY hash(uid)) AS rn FROM thumbs WHERE stage = {data.lit(st)} ORDER BY rn, reason "
                f"LIMIT {DROPPED_GRID}) p JOIN samples s ON s.uid = p.uid ORDER BY p.rn, s.reason")
        if not rows:  # no stored thumbnails for this stage: its rows as text
            cond = "s.stage IS NULL" if st == "(none)" else f"s.stage = {data.lit(st)}"
            rows = data.dicts(r.con,
                f"SELECT {sel}, NULL AS thumb FROM (SELECT *, row_number() OVER (PARTITION BY reason "
                f"ORDER BY hash(uid)) AS rn FROM samples s WHERE status = 'dropped' AND {cond}) s "
                f"ORDER BY s.rn, s.reason LIMIT {DROPPED_GRID}")
        n = sum(reasons.values())
        why = ", ".join(f"<code>{esc(rs)}</code> {_n(c)}" for rs, c in sorted(reasons.items(), key=lambda x: -x[1]))
        shown = sum(1 for row in rows if row["thumb"])
        out.append(f'<h3 class="dropped-stage" data-stage="{esc(st)}">{esc(st)} '
                   f'<span class="muted">({_n(n)} dropped: {why}; {_n(shown)} with a stored image shown)</span></h3>')
        tiles = [_example_tile(row, scores, jpeg_uri(row["thumb"]) if row["thumb"] else None, show_reason=True)
                 for row in rows]
        out.append('<div class="grid">' + "".join(tiles) + "</div>")
    return "".join(out)


# --------------------------------------------------------------------------------------------------------

CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa}header.top{background:#263238;color:#fff;padding:14px 28px}header.top h1{margin:0;font-size:22px}
header.top .sub{opacity:.8;font-size:13px}nav{padding:6px 28px;background:#eceff1;position:sticky;top:0;z-index:2}
nav a{margin-right:14px;color:#37474f;text-decoration:none;font-weight:600}main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:8px;padding:12px 20px;margin:16px 0}
h2{margin:4px 0 10px;font-size:18px}h3{font-size:15px;margin:16px 0 8px}h4{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}thead th{background:#f5f5f5}table.num td:not(:first-child){font-variant-numeric:tabular-nums}
table.facts th{color:#555;font-weight:600}table.small{font-size:12px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:6px 0 10px}.card{border-radius:8px;padding:8px 16px;min-width:140px;
background:#eceff1}.card .label{font-size:12px;color:#555}.card .value{font-size:22px;font-weight:700}
.card .pct{font-size:12px;color:#555}.card.kept{background:#e8f5e9}.card.dropped{background:#ffebee}.card.failed{background:#f0f0f0}
.two{display:flex;gap:32px;flex-wrap:wrap}.bar{height:10px;background:#90a4ae;border-radius:2px;min-width:2px;width:0}
td:last-child .bar{display:block}table.timings td:nth-child(3){width:240px}.versions span{white-space:nowrap}
img.plot{max-width:100%;height:auto;display:block;margin:6px 0}.figs{display:flex;flex-wrap:wrap;gap:16px}
.fig{flex:0 1 600px}.fig.wide{flex:1 1 100%}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
figure.tile{margin:0;border:1px solid #e0e0e0;border-radius:6px;padding:6px;background:#fff;overflow:hidden}
img.thumb{width:100%;height:150px;object-fit:contain;background:#f5f5f5;display:block}
.noimg{height:60px;display:flex;align-items:center;justify-content:center;background:#f5f5f5;color:#999;font-size:12px}
figure.keeper{border:2px solid #2e7d32}figure.copy{border:2px solid #c62828}
.dupsets{display:flex;flex-wrap:wrap;gap:4px 28px}.dupset{display:flex;gap:8px;align-items:stretch;overflow-x:auto;margin:6px 0;max-width:100%}.dupset figure.tile{flex:0 0 170px}
.dupsize,.more{flex:0 0 54px;display:flex;align-items:center;justify-content:center;color:#555;font-size:12px;text-align:center}
figcaption{font-size:12px;margin-top:4px;word-break:break-word}figcaption span{display:block}.info{color:#666}
.err{color:#b71c1c}.url{color:#777;font-family:monospace;font-size:11px}.muted{color:#888}
.warn{background:#fff8e1;border-left:4px solid #ffb300;padding:6px 10px}.st{padding:0 6px;border-radius:3px;font-size:12px}
.st.dropped{background:#ffebee;color:#b71c1c}.st.failed{background:#eee;color:#424242}
.sec-error{background:#ffebee;border-left:4px solid #c62828;padding:6px 10px;white-space:pre-wrap}
pre{background:#f5f5f5;padding:10px;overflow:auto;font-size:12px}details{margin:10px 0}footer{color:#888;font-size:12px;padding:0 28px 20px}
"""


def _page(title: str, subtitle: str, sections: list[tuple[str, str, str]], footer: str) -> str:
    nav = "".join(f'<a href="#{esc(sid)}">{esc(t)}</a>' for sid, t, _ in sections)
    body = "".join(f'<section id="{esc(sid)}"><h2>{esc(t)}</h2>{h}</section>' for sid, t, h in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)} · curate report</title><style>{CSS}</style></head><body>"
            f'<header class="top"><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div></header>'
            f"<nav>{nav}</nav><main>{body}</main><footer>{footer}</footer></body></html>\n")


def _slug(title: str, used: set[str]) -> str:
    base = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-") or "section"
    sid, i = base, 2
    while sid in used:
        sid, i = f"{base}-{i}", i + 1
    used.add(sid)
    return sid


def build_html(out_dir: Path | str, extra_sections: list | None = None, *, strict: bool = False) -> str:
    """The report page as a string (write_report writes it to OUT/report.html)."""
    t0 = time.time()
    run = RunDir(out_dir)
    if not run.root.is_dir():
        raise ReportError(f"no such run directory: {run.root}")
    manifest = None
    if run.exists():
        try:
            manifest = run.load_manifest()
        except ManifestError as err:
            raise ReportError(str(err)) from None
    recipe, stages = _load_recipe(run)
    if manifest is None and not run.meta.exists():
        raise ReportError(f"{run.root} is not a curate run directory (no manifest.json, no meta/)")
    manifest = manifest or Manifest(status="unknown status")
    r = _Run(run=run, manifest=manifest, recipe=recipe, stages=stages)
    title = manifest.name or recipe.get("name") or run.root.name
    sections: list[tuple[str, str, str]] = []
    used: set[str] = set()

    def add(title_: str, fn: Callable[[], str]) -> None:
        sid = _slug(title_, used)
        t1 = time.perf_counter()
        try:
            body = fn()
            log.debug("report section %s: %.2f s", title_, time.perf_counter() - t1)
        except Exception as err:  # a broken section must not cost the rest of the report
            if strict:
                raise
            log.exception("report section %r failed", title_)
            body = f'<p class="sec-error">this section could not be rendered: {esc(type(err).__name__)}: {esc(err)}</p>'
        sections.append((sid, title_, body))

    with tempfile.TemporaryDirectory(prefix="curate-report-") as tmp:
        try:
            r.con = connect(run.root)
        except CatalogError:
            r.con = None
        if r.con is not None:
            r.con.execute("SET memory_limit = '2GB'")
            r.con.execute(f"SET temp_directory = {data.lit(tmp)}")
            r.con.execute("SET preserve_insertion_order = false")
            r.con.execute("SET enable_progress_bar = false")
            r.cols = data.columns(r.con)
            r.counts = data.outcome_counts(r.con)
            r.total = sum(n for *_, n in r.counts)
            r.kept = sum(n for s, *_, n in r.counts if s == schema.OK)
        try:
            add("Run", lambda: _header(r))
            if r.con is None:
                sections.append(("no-data", "Metadata", "<p class='warn'>This run has no metadata parts yet "
                                 "(meta/part-*.parquet); only the manifest is shown.</p>"))
            else:
                add("Funnel", lambda: _funnel(r))
                add("Distributions", lambda: _distributions(r))
                add("Duplicates", lambda: _duplicates(r))
                if "balance_entries" in r.cols:
                    from curate.balance.counts import section as balance_section

                    add("Balancing", lambda: balance_section(r.con, r.run.root, r.recipe))
                add("Samples", lambda: _samples(r))
                add("Dropped samples", lambda: _dropped(r))
        finally:
            if r.con is not None:
                r.con.close()
    for item in extra_sections or []:
        if isinstance(item, dict):
            t, h = item.get("title", "Extra"), item.get("html", "")
        else:
            t, h = item
        sections.append((_slug(str(t), used), str(t), str(h)))
    subtitle = (f"{manifest.status} · {_n(r.total)} rows · {_n(r.kept)} kept "
                f"({_pct(r.kept, r.total)})")
    version = manifest.versions.get("curate", "")
    footer = (f"generated {esc(time.strftime('%Y-%m-%dT%H:%M:%S%z'))} by curate {esc(version)} in "
              f"{time.time() - t0:.1f} s from {esc(run.root.resolve())}")
    return _page(str(title), subtitle, sections, footer)


def write_report(out_dir: Path | str, extra_sections: list | None = None, *, strict: bool = False) -> Path:
    """Write OUT/report.html (atomically) and return its path.

    extra_sections: (title, html) pairs (or {"title", "html"} dicts) appended after the built-in sections;
    the html is inserted as is. strict=True re-raises a section's error instead of showing it in the page.
    """
    run = RunDir(out_dir)
    page = build_html(run.root, extra_sections, strict=strict)
    atomic.write_bytes(run.report, page.encode("utf-8"))
    return run.report


def report_main(out: Path | str) -> Path:
    """CLI entry: `curate report OUT` -> writes and returns OUT/report.html; ReportError carries a one-line message.

    It writes into OUT, so it holds OUT's writer lock as a run does: while a run (or another report) writes
    OUT it is refused in one line, rather than drawing half-committed parts and racing the run's own
    report.html. A folder that is no run directory gets no lock file: build_html says what is wrong."""
    storage.preflight(out, write=True)  # a remote run: unreachable store, missing bucket, bad keys: one line
    run = RunDir(out)
    if not run.root.is_dir() or not (run.exists() or run.meta.exists()):
        return write_report(out)
    try:
        with run.writer_lock(then="run curate report when it has finished (a run writes report.html itself "
                                  "when it completes)"):
            return write_report(out)  # a local folder or a run on s3://... (RunDir resolves it)
    except RunDirBusy as err:
        raise ReportError(str(err)) from None


def _stage_timings_html(stages: dict, esc) -> str:
    """Per recipe step: rows that reached it, rows in play, kept, dropped, failed and seconds (stages: worker
    seconds summed over parts; jobs: wall time), from the manifest's stage_timings."""
    if not stages:
        return ""
    top = max([float(c.get("seconds") or 0) for c in stages.values()] or [1.0]) or 1.0
    rows = []
    for name, c in stages.items():
        secs = float(c.get("seconds") or 0)
        rate = f"{c.get('rows', 0) / secs:,.1f}" if secs > 0 and c.get("rows") else "-"
        rows.append([esc(name), esc(c.get("kind", "")), *(f"{int(c.get(k) or 0):,}" for k in
                     ("rows", "in", "kept", "dropped", "failed")), f"{secs:,.2f} s", rate,
                     f'<div class="bar" style="width:{max(0.5, 100 * secs / top):.1f}%"></div>'])
    return ("<h3>Stage timings</h3>" +
            _table(["step", "kind", "rows", "in play", "kept", "dropped", "failed", "seconds", "rows/s", ""], rows,
                   "timings"))
