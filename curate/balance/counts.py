"""Per-entry counts of a balanced run (before and after `metaclip_balance`) and its report section.

Counted in DuckDB from meta/*.parquet, the run's source of truth: `matched` = rows whose caption matched
the entry (active when balancing ran), `balanced` = those the balancer kept, `kept` = those still kept
at the end of the run (later stages may drop more). Written to OUT/balance_counts.parquet.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.io import atomic

STAGE = "metaclip_balance"
COUNTS_FILE = "balance_counts.parquet"


def entry_counts(con) -> pa.Table:
    """entry, matched, balanced, kept for every entry that matched at least one row (most matched first)."""
    rows = con.execute(
        "SELECT entry, count(*) AS matched, "
        f"count(*) FILTER (WHERE NOT (status = 'dropped' AND stage = '{STAGE}')) AS balanced, "
        "count(*) FILTER (WHERE status = 'ok') AS kept "
        "FROM (SELECT unnest(balance_entries) AS entry, status, stage FROM samples "
        "      WHERE balance_entries IS NOT NULL) "
        "GROUP BY entry ORDER BY matched DESC, entry").fetchall()
    cols = list(zip(*rows)) or [(), (), (), ()]
    return pa.table({"entry": pa.array(cols[0], pa.string()), "matched": pa.array(cols[1], pa.int64()),
                     "balanced": pa.array(cols[2], pa.int64()), "kept": pa.array(cols[3], pa.int64())})


def _t_of(recipe: dict) -> int | None:
    for item in recipe.get("stages") or []:
        if isinstance(item, dict) and STAGE in item:
            return int((item[STAGE] or {}).get("t", 20_000))
    return None


def plot(counts: pa.Table, t: int | None) -> str:
    """Count per entry, entries sorted by matches (log-log), before vs after balancing, with the cap t."""
    from curate.report import plots

    fig = plots._figure(6.5, 3.2)
    ax = fig.add_subplot()
    before = np.asarray(counts.column("matched").to_pylist(), float)
    after = np.asarray(counts.column("balanced").to_pylist(), float)
    rank = np.arange(1, len(before) + 1)
    ax.plot(rank, before, color=plots.COLORS["dropped"], lw=1.5, label="matched (before)")
    ax.plot(rank, after, color=plots.COLORS["ok"], lw=1.5, label="after balancing")
    if t is not None:
        ax.axhline(t, color="#555", ls="--", lw=1, label=f"t = {t:,}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(plots._PLAIN)
    ax.yaxis.set_major_formatter(plots._PLAIN)
    ax.set_xlabel("entry rank (by matches)")
    ax.set_ylabel("samples")
    ax.set_title("samples per metadata entry: head vs tail", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return plots.to_data_uri(fig)


def section(con, run_root: Path, recipe: dict) -> str:
    """HTML for the report's Balancing section; also writes OUT/balance_counts.parquet."""
    counts = entry_counts(con)
    atomic.write_parquet(counts, Path(run_root) / COUNTS_FILE)
    t = _t_of(recipe)
    no_entry, sub = con.execute(
        f"SELECT count(*) FILTER (WHERE reason = 'balance_no_entry'), "
        f"count(*) FILTER (WHERE reason = 'balance_head_subsampled') FROM samples WHERE stage = '{STAGE}'"
    ).fetchone()
    m = np.asarray(counts.column("matched").to_pylist(), int)
    head = int((m > t).sum()) if t is not None else 0
    out = [f"<p>MetaCLIP balancing (<code>{STAGE}</code>, t = {t if t is not None else '?'}): "
           f"{len(m):,} entries matched at least one caption, {head:,} of them head entries (more than t); "
           f"{int(sub):,} samples sub-sampled from the head, {int(no_entry):,} matched no entry. "
           f"Per-entry counts: <code>{COUNTS_FILE}</code>.</p>"]
    if counts.num_rows:
        out.append(f'<img class="plot" alt="samples per entry" src="{plot(counts, t)}">')
        rows = counts.slice(0, 15).to_pylist()
        body = "".join(f"<tr><td>{html.escape(r['entry'])}</td><td>{r['matched']:,}</td><td>{r['balanced']:,}</td>"
                       f"<td>{r['kept']:,}</td></tr>" for r in rows)
        out.append("<h3>Largest entries</h3><table><thead><tr><th>entry</th><th>matched</th><th>after balancing</th>"
                   f"<th>kept at the end</th></tr></thead><tbody>{body}</tbody></table>")
    return "".join(out)
