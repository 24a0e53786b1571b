"""DuckDB over a run directory: views `samples`, `kept`, `dropped`, `failed`, `shards`, `stages`.

DuckDB reads the Parquet parts in place (no import step), so a catalog over millions of rows opens instantly.

The SQL comes from users (and from scripts that pass SQL along), so by default the catalog reaches nothing
but the run's own Parquet parts: only SELECT statements run; DuckDB's external access is off with the
parts as its only allowed paths (no COPY TO, ATTACH, INSTALL/LOAD, reading other files or URLs);
extensions never auto-install or auto-load; nothing spills to a temp folder; and the configuration is
locked so a query cannot turn any of it back on. `external=True` (`--allow-external`) opens DuckDB as
it comes, for users who want to export or join other files. curate's own readers (the report) connect
unlocked: they set memory limits and a temp folder, and run no user SQL.
"""
from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from curate.io import storage
from curate.io.rundir import RunDir


log = logging.getLogger(__name__)


class CatalogError(Exception):
    pass


def _file_list(paths: list[Path]) -> str:
    """A SQL list literal of file paths (an explicit list: no directory listing, which external access
    off would refuse)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _locked_down(allowed: list[Path]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                 "temp_directory": ""})
    con.execute(f"SET allowed_paths = {_file_list(allowed)}")
    con.execute("SET enable_external_access = false")
    return con


def _parquet(con: duckdb.DuckDBPyConnection, name: str, paths: list, remote: bool) -> str:
    """The FROM clause that reads Parquet files `paths`. Local files: DuckDB's read_parquet. Remote ones
    (s3://, gs://): an Arrow dataset over the fsspec filesystem, registered as `name`: DuckDB scans it
    lazily (projection and filter pushdown, no download step), and it works with external access off,
    which refuses DuckDB's own remote readers and registered filesystems alike."""
    if not remote:
        return f"read_parquet({_file_list(paths)}, union_by_name = true)"
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(paths[0])
    inner = [storage.filesystem(p)[1] for p in paths]
    schemas = []
    for p in inner:
        with fs.open(p, "rb") as f:
            schemas.append(pq.read_schema(f))
    con.register(name, storage.dataset(paths, schema=pa.unify_schemas(schemas, promote_options="permissive")))
    return name


def _warn_if_parts_disagree(run: RunDir, parts: list) -> None:
    """One warning line when a finished run's meta/ lacks a part its manifest lists (or holds one it does not):
    the views read what meta/ holds, so such a run silently answered with fewer rows. Not refused: query
    and inspect are how one looks at the damage. A run still writing (its parts commit as they finish) or
    without a readable manifest is not compared; `curate validate` says more."""
    from curate.io.manifest import ManifestError

    try:
        manifest = run.load_manifest() if run.exists() else None
    except ManifestError:
        return
    if manifest is None or not manifest.complete:
        return
    problems = run.parts_problems(manifest, {p.name for p in parts})
    if problems:
        log.warning("%s: %s; results may lack rows: run `curate validate %s`", run.root, "; ".join(problems),
                    run.root)


def connect(out: str | Path, locked: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the run's views; `locked` for user SQL (module doc)."""
    try:
        storage.preflight(out)
        run = RunDir(out)
    except storage.StorageError as err:
        raise CatalogError(str(err)) from None
    if not run.root.exists():
        raise CatalogError(f"no such run directory: {run.root}")
    parts = storage.glob(run.meta, "part-*.parquet")
    if not parts:
        raise CatalogError(f"{run.root} has no metadata parts (meta/part-*.parquet): is it a curate run directory?")
    _warn_if_parts_disagree(run, parts)
    emb = storage.glob(run.embeddings, "part-*.parquet")
    thumbs = storage.glob(run.thumbs, "part-*.parquet")
    remote = storage.is_remote(run.root)
    con = _locked_down([] if remote else parts + emb + thumbs) if locked else duckdb.connect()
    con.execute(f"CREATE VIEW samples AS SELECT * FROM {_parquet(con, '_samples', parts, remote)}")
    con.execute("CREATE VIEW kept AS SELECT * FROM samples WHERE status = 'ok'")
    con.execute("CREATE VIEW dropped AS SELECT * FROM samples WHERE status = 'dropped'")
    con.execute("CREATE VIEW failed AS SELECT * FROM samples WHERE status = 'failed'")
    if emb:
        con.execute(f"CREATE VIEW embeddings AS SELECT * FROM {_parquet(con, '_embeddings', emb, remote)}")
    if thumbs:  # the report's thumbnails of a sample of dropped rows (docs/report.md)
        con.execute(f"CREATE VIEW thumbs AS SELECT * FROM {_parquet(con, '_thumbs', thumbs, remote)}")
    shard_files = storage.glob(run.shards, "*.tar")
    con.execute("CREATE TABLE _shard_files (shard VARCHAR, path VARCHAR, bytes BIGINT)")
    if shard_files:
        con.executemany("INSERT INTO _shard_files VALUES (?, ?, ?)",
                        [(f"shards/{p.name}", str(p), p.stat().st_size) for p in shard_files])
    con.execute(
        "CREATE VIEW shards AS SELECT f.shard, f.path, f.bytes, coalesce(k.samples, 0) AS samples "
        "FROM _shard_files f LEFT JOIN (SELECT shard, count(*) AS samples FROM kept GROUP BY shard) k "
        "USING (shard) ORDER BY f.shard"
    )
    _stages_table(con, run)
    if locked:
        con.execute("SET lock_configuration = true")
    return con


def _stages_table(con: duckdb.DuckDBPyConnection, run: RunDir) -> None:
    """`stages`: the manifest's stage_timings, one row per recipe step in order (rows that reached it, rows in
    play, kept, dropped, failed, seconds; empty for runs from before stage timings)."""
    import json

    con.execute("CREATE TABLE stages (step INTEGER, stage VARCHAR, kind VARCHAR, rows BIGINT, rows_in BIGINT, "
                "kept BIGINT, dropped BIGINT, failed BIGINT, seconds DOUBLE)")
    try:
        timings = json.loads(run.manifest_path.read_text()).get("stage_timings") or {}
    except (OSError, ValueError):
        return
    rows = [(i, name, c.get("kind"), c.get("rows"), c.get("in"), c.get("kept"), c.get("dropped"), c.get("failed"),
             c.get("seconds")) for i, (name, c) in enumerate(timings.items())]
    if rows:
        con.executemany("INSERT INTO stages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _statements(sql: str) -> list:
    """The statements of `sql`, parsed by DuckDB (a syntax error is the user's one line)."""
    try:
        return duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise CatalogError(f"query failed: {str(err).splitlines()[0]}") from None


def _only_selects(sql: str) -> None:
    """Refuse anything but SELECT-like statements (SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE):
    external access off still lets COPY write into the allowed parts, so statements are checked too."""
    for st in _statements(sql):
        if st.type != duckdb.StatementType.SELECT:
            kind = str(st.type).rsplit(".", 1)[-1]
            raise CatalogError(f"query refused: only SELECT statements run on a run's catalog, not {kind} "
                               "(pass --allow-external to let DuckDB write files, attach databases or load extensions)")


def query(out: str | Path, sql: str, external: bool = False):
    """Run SQL against the run's views; returns (column names, rows) of its last statement. Without
    `external`, reads nothing but the run's parts and writes nothing (module doc)."""
    results = query_each(out, sql, external)
    return results[-1] if results else ([], [])


def query_each(out: str | Path, sql: str, external: bool = False) -> list[tuple[list[str], list[tuple]]]:
    """Run each statement of `sql` in order; returns (column names, rows) for each one that returns rows.
    `curate query` shows them all, as DuckDB's own CLI does: executing the whole text at once returns only
    the last statement's result, and `SELECT 1; SELECT 2` silently lost the first."""
    return [(cols, [r for chunk in rows for r in chunk]) for cols, rows in stream_each(out, sql, external)]


def stream_each(out: str | Path, sql: str, external: bool = False, chunk: int = 10_000):
    """As query_each, lazily: yields (column names, an iterator of row chunks) per statement that returns
    rows, each statement run only once the previous result was read. `curate query` prints a result while
    DuckDB produces it: a 10M-row CSV export no longer sits in memory whole, and a later statement's error
    comes after the earlier results, as in DuckDB's own CLI."""
    statements = _statements(sql)
    if not statements:
        raise CatalogError("query failed: no SQL statement")
    if not external:
        _only_selects(sql)
    con = connect(out, locked=not external)

    def chunks(cur):
        while True:
            try:
                got = cur.fetchmany(chunk)
            except duckdb.Error as err:  # errors can surface while rows are fetched (a cast, a bad file)
                raise CatalogError(f"query failed: {str(err).splitlines()[0]}") from None
            if not got:
                return
            yield got

    for st in statements:
        try:
            cur = con.execute(st.query)
        except duckdb.Error as err:
            raise CatalogError(f"query failed: {str(err).splitlines()[0]}") from None
        if cur.description is not None:
            rows = chunks(cur)
            yield [d[0] for d in cur.description], rows
            for _ in rows:  # the caller stopped early: finish this result before the next statement runs
                pass
