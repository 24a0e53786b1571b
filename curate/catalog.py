"""DuckDB over a run directory: views `samples`, `kept`, `dropped`, `failed`, `shards`.

DuckDB reads the Parquet parts in place (no import step), so a catalog over millions of rows opens instantly.
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from curate.io.rundir import RunDir


class CatalogError(Exception):
    pass


def connect(out: str | Path) -> duckdb.DuckDBPyConnection:
    run = RunDir(out)
    if not run.root.exists():
        raise CatalogError(f"no such run directory: {run.root}")
    parts = sorted(run.meta.glob("part-*.parquet")) if run.meta.exists() else []
    if not parts:
        raise CatalogError(f"{run.root} has no metadata parts (meta/part-*.parquet): is it a curate run directory?")
    con = duckdb.connect()
    glob = str(run.meta / "part-*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet('{glob}', union_by_name = true)")
    con.execute("CREATE VIEW kept AS SELECT * FROM samples WHERE status = 'ok'")
    con.execute("CREATE VIEW dropped AS SELECT * FROM samples WHERE status = 'dropped'")
    con.execute("CREATE VIEW failed AS SELECT * FROM samples WHERE status = 'failed'")
    if run.embeddings.exists() and any(run.embeddings.glob("part-*.parquet")):
        eglob = str(run.embeddings / "part-*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW embeddings AS SELECT * FROM read_parquet('{eglob}', union_by_name = true)")
    shard_files = sorted(run.shards.glob("*.tar")) if run.shards.exists() else []
    con.execute("CREATE TABLE _shard_files (shard VARCHAR, path VARCHAR, bytes BIGINT)")
    if shard_files:
        con.executemany("INSERT INTO _shard_files VALUES (?, ?, ?)",
                        [(f"shards/{p.name}", str(p), p.stat().st_size) for p in shard_files])
    con.execute(
        "CREATE VIEW shards AS SELECT f.shard, f.path, f.bytes, coalesce(k.samples, 0) AS samples "
        "FROM _shard_files f LEFT JOIN (SELECT shard, count(*) AS samples FROM kept GROUP BY shard) k "
        "USING (shard) ORDER BY f.shard"
    )
    return con


def query(out: str | Path, sql: str):
    """Run SQL against the run's views; returns (column names, rows)."""
    con = connect(out)
    try:
        cur = con.execute(sql)
    except duckdb.Error as err:
        raise CatalogError(f"query failed: {str(err).splitlines()[0]}") from None
    if cur.description is None:
        return [], []
    return [d[0] for d in cur.description], cur.fetchall()
