"""Hostile SQL and hostile data for `curate query` / `inspect` / `clusters`: the catalog reads only the run,
writes nothing, and prints captions as text (no rich markup, no terminal escapes). Real DuckDB over a real
run directory (meta Parquet part + WebDataset tar), through the real CLI entry point in-process."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.io.shard_writer import write_tar
from tests.conftest import curate_inprocess

CAPTIONS = [
    "[bold]x[/]",
    "[/]",
    "\x1b[2Jcleared",
    "[link=file:///etc/passwd]click[/link]",
    "\x9b31mred",  # C1 CSI
    "abc\u202edcba",  # right-to-left override
    "a plain caption",
]


def make_run(root: Path) -> Path:
    (root / "meta").mkdir(parents=True)
    (root / "shards").mkdir()
    n = len(CAPTIONS)
    rows = {"uid": [f"u{i}" if i else "[/]" for i in range(n)], "row": list(range(n)), "part": [0] * n,
            "status": ["ok"] * n, "stage": [None] * n, "reason": [None] * n, "text": CAPTIONS,
            "url": [f"http://127.0.0.1/{i}.jpg" for i in range(n)], "shard": ["shards/000000.tar"] * n,
            "key": [f"k{i}" for i in range(n)], "minhash_cluster": ["[red]c[/]"] * 3 + [None] * (n - 3)}
    pq.write_table(pa.table(rows), root / "meta" / "part-000000.parquet")
    write_tar(root / "shards" / "000000.tar", [{"key": f"k{i}", "image": b"x", "text": t} for i, t in enumerate(CAPTIONS)])
    return root


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A run, a folder outside it (with a Parquet file a query must not read), and an empty working
    directory (DuckDB would spill to ./.tmp); returns (run, outside, snapshot)."""
    run = make_run(tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), outside / "secret.parquet")
    (outside / "notes.txt").write_text("private\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def snapshot():
        return sorted((str(p.relative_to(tmp_path)), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in tmp_path.rglob("*"))

    return run, outside, snapshot


def _escapes(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f or c == "\u202e"]


REFUSED = [
    "COPY (SELECT * FROM samples) TO '{outside}/dump.csv'",
    "COPY (SELECT * FROM samples) TO '{run}/meta/part-000001.parquet' (FORMAT parquet)",
    "SELECT 1; COPY (SELECT 1) TO '{outside}/x.csv'",
    "ATTACH '{outside}/db.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "CREATE TABLE t AS SELECT * FROM samples",
    "SELECT * FROM read_csv('{outside}/notes.txt')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_parquet('{outside}/secret.parquet')",
    "SELECT * FROM '{outside}/secret.parquet'",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('{run}/meta/../../outside/secret.parquet')",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_sql_reaching_outside_the_run_is_refused(world, capsys, sql):
    run, outside, snapshot = world
    before = snapshot()
    proc = curate_inprocess("query", run, sql.format(run=run, outside=outside), capsys=capsys)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "s3cr3t" not in proc.stdout + proc.stderr
    assert snapshot() == before


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n FROM samples",
    "DESCRIBE samples",
    "WITH k AS (SELECT * FROM kept) SELECT count(*) FROM k",
    "SELECT shard, samples FROM shards",
    "SELECT count(*) FROM read_parquet('{run}/meta/part-000000.parquet')",
])
def test_reading_the_run_itself_works(world, capsys, sql):
    run, _, snapshot = world
    before = snapshot()
    proc = curate_inprocess("query", run, sql.format(run=run), "-f", "json", capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)
    assert snapshot() == before


def test_allow_external_is_the_explicit_way_out(world, capsys):
    run, outside, _ = world
    target = outside / "dump.csv"
    proc = curate_inprocess("query", run, f"COPY (SELECT uid FROM samples) TO '{target}'", "--allow-external",
                            capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text().count("\n") == len(CAPTIONS) + 1


def test_inspect_where_cannot_smuggle_a_second_statement(world, capsys):
    run, outside, snapshot = world
    before = snapshot()
    proc = curate_inprocess("inspect", run, "--where", f"true; COPY (SELECT 1) TO '{outside}/x.csv'; SELECT 1 WHERE true",
                            capsys=capsys)
    assert proc.returncode == 2 and "query failed" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot() == before


@pytest.mark.parametrize("where", ["true; SELECT 2 AS two", "true ORDER BY uid DESC LIMIT 1 --"])
def test_inspect_where_is_one_condition(world, capsys, where):
    """A second statement's result (or a smuggled ORDER BY / LIMIT) used to replace the samples shown."""
    run, _, _ = world
    proc = curate_inprocess("inspect", run, "--where", where, capsys=capsys)
    assert proc.returncode == 2 and "query failed" in proc.stderr, proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and "two" not in proc.stdout


def test_inspect_where_blank_is_refused(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("inspect", run, "--where", " ", capsys=capsys)
    assert proc.returncode == 2 and "--where needs a condition" in proc.stderr


def test_captions_print_literally_in_a_table(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("query", run, "SELECT uid, text FROM samples ORDER BY row", capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert not _escapes(out), _escapes(out)
    for literal in ("[bold]x[/]", "[/]", "\\x1b[2Jcleared", "[link=file:///etc/passwd]click[/link]", "\\x9b31mred",
                    "abc\\u202edcba"):
        assert literal in out, literal


def test_inspect_prints_every_hostile_caption_and_uid_literally(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("inspect", run, "-n", "50", capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert not _escapes(proc.stdout)
    assert "[bold]x[/]" in proc.stdout and "\\x1b[2J" in proc.stdout and f"{len(CAPTIONS)} sample(s)" in proc.stdout
    proc = curate_inprocess("inspect", run, "--uid", "[/]", capsys=capsys)
    assert proc.returncode == 0 and "[bold]x[/]" in proc.stdout, proc.stderr


def test_error_lines_quote_user_data_literally(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("inspect", run, "--uid", "[/]\x1b[2J-missing", capsys=capsys)
    assert proc.returncode == 2
    assert "[/]\\x1b[2J-missing" in proc.stderr and not _escapes(proc.stderr)
    proc = curate_inprocess("query", run, "SELECT '[/]\x1b[2J' FROM nope", capsys=capsys)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and not _escapes(proc.stderr), proc.stderr


def test_json_output_is_lossless_and_inert(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("query", run, "SELECT text FROM samples ORDER BY row", "-f", "json", capsys=capsys)
    assert proc.returncode == 0
    assert not _escapes(proc.stdout)
    assert [r["text"] for r in json.loads(proc.stdout)] == CAPTIONS


def test_csv_to_a_pipe_keeps_the_bytes(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("query", run, "SELECT text FROM samples ORDER BY row", "-f", "csv", capsys=capsys)
    assert proc.returncode == 0
    assert [r[0] for r in csv.reader(io.StringIO(proc.stdout))][1:] == CAPTIONS


def test_clusters_print_markup_cluster_names_literally(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("clusters", run, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert "[red]c[/]" in proc.stdout
    proc = curate_inprocess("clusters", run, "--cluster", "[red]c[/]", capsys=capsys)
    assert proc.returncode == 0 and "[bold]x[/]" in proc.stdout and not _escapes(proc.stdout)


@pytest.mark.parametrize("where", [
    "true); COPY (SELECT * FROM samples) TO '{outside}/dump.csv'; SELECT (1",
    "uid IN (SELECT secret FROM read_parquet('{outside}/secret.parquet'))",
    "uid IN (SELECT content FROM read_text('/etc/hostname'))",
])
def test_refilter_where_is_as_locked_as_query(world, where):
    """`curate refilter --where` is user SQL too: one SELECT over the run's own parts, nothing else."""
    from curate.catalog import CatalogError
    from curate.refilter import _failing_uids

    run, outside, snapshot = world
    before = snapshot()
    with pytest.raises(CatalogError) as err:
        _failing_uids(run, where.format(outside=outside))
    assert "\n" not in str(err.value) and "s3cr3t" not in str(err.value)
    assert snapshot() == before
    assert _failing_uids(run, "text = 'a plain caption'") == {f"u{i}" for i in range(1, len(CAPTIONS) - 1)} | {"[/]"}


def test_a_huge_cell_is_cut_in_the_table_and_whole_in_csv_and_json(world, capsys):
    """A 100k-character caption would fill the terminal: the table shows 500 characters and how many more;
    csv and json keep the whole value."""
    run, _, _ = world
    sql = "SELECT repeat('x', 100000) AS long"
    table = curate_inprocess("query", run, sql, capsys=capsys)
    assert table.returncode == 0 and "(+99500 characters; --format json shows all)" in table.stdout
    assert table.stdout.count("x") < 1000
    whole = curate_inprocess("query", run, sql, "-f", "json", capsys=capsys)
    assert json.loads(whole.stdout) == [{"long": "x" * 100000}]
    assert curate_inprocess("query", run, sql, "-f", "csv", capsys=capsys).stdout.count("x") == 100000


def test_several_statements_show_each_result_in_order(world, capsys):
    """`SELECT 1; SELECT 2` showed only the last result (DuckDB returns only that from one execute); each
    statement's result now prints in order, as in DuckDB's own CLI: one JSON array per line, one CSV block
    (with its header) and one table each."""
    run, _, _ = world
    sql = "SELECT count(*) AS n FROM samples; SELECT 'second' AS word; SELECT uid FROM kept WHERE uid = 'u1'"
    js = curate_inprocess("query", run, sql, "-f", "json", capsys=capsys)
    assert js.returncode == 0, js.stderr
    assert [json.loads(line) for line in js.stdout.splitlines()] == [[{"n": len(CAPTIONS)}], [{"word": "second"}],
                                                                     [{"uid": "u1"}]]
    assert curate_inprocess("query", run, sql, "-f", "csv", capsys=capsys).stdout == \
        f"n\n{len(CAPTIONS)}\nword\nsecond\nuid\nu1\n"
    table = curate_inprocess("query", run, sql, capsys=capsys).stdout
    assert table.index(" n ") < table.index("second") < table.index("u1")


@pytest.mark.parametrize("sql,message", [("SELECT 1; SELECT nope FROM samples", "query failed: "),
                                         ("", "query failed: no SQL statement"),
                                         (" ; ", "query failed: no SQL statement")])
def test_a_failing_or_missing_statement_is_one_line(world, capsys, sql, message):
    run, _, _ = world
    proc = curate_inprocess("query", run, sql, capsys=capsys)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_big_result_streams_and_a_table_shows_its_first_rows(world, capsys, monkeypatch):
    """A result was fetched whole and laid out as one table (300k rows: 30 s and 0.5 GB before a line
    appeared); csv and json now stream it chunk by chunk, a table shows its first rows and says how many more."""
    import curate.cli

    run, _, _ = world
    monkeypatch.setattr(curate.cli, "TABLE_MAX_ROWS", 50)
    sql = "SELECT range AS i FROM range(25001)"  # more than two of stream_each's 10,000-row chunks
    table = curate_inprocess("query", run, sql, capsys=capsys)
    assert table.returncode == 0 and "│ 49 " in table.stdout and "│ 50 " not in table.stdout
    assert "(showing the first 50 of 25001 rows: add LIMIT, or use --format csv or json for all of them)" in table.stderr
    assert curate_inprocess("query", run, sql, "-f", "csv", capsys=capsys).stdout == \
        "i\n" + "".join(f"{i}\n" for i in range(25001))
    js = curate_inprocess("query", run, sql + "; SELECT 1 AS one WHERE false", "-f", "json", capsys=capsys).stdout
    assert [json.loads(line) for line in js.splitlines()] == [[{"i": i} for i in range(25001)], []]


def test_results_before_a_failing_statement_are_shown(world, capsys):
    run, _, _ = world
    proc = curate_inprocess("query", run, "SELECT 'first' AS w; SELECT nope FROM samples", "-f", "csv", capsys=capsys)
    assert proc.returncode == 2 and proc.stdout == "w\nfirst\n" and proc.stderr.startswith("error: query failed: ")


def test_inspect_and_clusters_take_the_formats_docs_name_and_refuse_others(world, capsys):
    # docs/cli.md says query, clusters and inspect take table|csv|json: inspect printed a table for csv, and
    # both printed a table for any other word
    run, _, _ = world
    csv_out = curate_inprocess("inspect", run, "--where", "uid = 'u1'", "-f", "csv", capsys=capsys)
    assert csv_out.returncode == 0 and csv_out.stdout.startswith("uid,") and "\nu1," in csv_out.stdout
    for args in (("inspect", run), ("clusters", run), ("query", run, "SELECT 1")):
        proc = curate_inprocess(*args, "-f", "xml", capsys=capsys)
        assert proc.returncode == 2 and proc.stderr == "error: --format must be table, csv or json, not 'xml'\n"
