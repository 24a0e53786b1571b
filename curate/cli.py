"""The `curate` command line: run recipes, generate the demo, query and check run directories.

Exit codes (docs/cli.md): 0 ok; 1 a bug in curate; 2 a user or environment error (bad argument or recipe,
missing input, Ray or disk trouble), always one `error:` line; 3 a run that finished but in which every row
failed; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Set CURATE_DEBUG=1 for tracebacks; -v/-q or CURATE_LOG_LEVEL for how loud it is.
"""
from __future__ import annotations

if __name__ == "__main__":  # `python -m curate.cli`: stop signals are handled before the imports below load
    from curate.entry import install as _handle_stop_signals  # (curate/entry.py, as the console script does)

    _handle_stop_signals()

import csv
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build multimodal pre-training datasets: download, dedup, filter, shard, validate.")
# wide enough not to fold tables when output goes to a file or CI log
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out_console = Console(width=None if sys.stdout.isatty() else 160)


class UserError(Exception):
    """An error whose message is the whole story for the user."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a scheduler or `kill` sends), raised in the main thread like Ctrl-C: the run stops the
    same way (Ray shut down, committed parts kept) and the user is told how to finish it."""


_STOP: dict[str, int] = {}  # the signal that stopped this command; typer turns Ctrl-C into a bare exit code 130
_PROGRAM = {"console": False}  # main(console=True): this process is `curate` itself, not a caller of main()


def _on_stop_signal(signum, frame):
    """Record the signal, say at once how to go on (a SIGTERM sent to the whole process group also stops
    Ray's own processes, and Ray may then end this process itself before any unwinding prints), raise."""
    import signal

    first = "signal" not in _STOP
    _STOP["signal"] = signum
    if first:
        _stop_line()
        if _PROGRAM["console"]:  # a notebook that called main() must not have its kernel ended 20 s later
            _exit_if_stuck(143 if signum == signal.SIGTERM else 130)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stop_unraisable(default):
    """sys.unraisablehook while a command runs. A stop signal's exception raised where Python cannot pass it
    on is printed as 'Exception ignored' and lost: a Ctrl-C that lands in logging's at-fork hook (Ray forks
    its processes at start) left the run going, with logging's module lock held (the hook was interrupted
    before releasing it), so the next log call hung until a second Ctrl-C. The hook's release is finished
    and the signal delivered again, so the command stops as after any Ctrl-C (its line is already out).
    It is delivered from another thread, a moment later: delivered here, it would be handled inside this
    hook (or the next at-fork hook) and lost again."""

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt) or "signal" not in _STOP:
            default(unraisable)
            return
        _finish_logging_fork_hook(unraisable.object)
        import _thread
        import threading

        again = threading.Timer(0.05, _thread.interrupt_main, (_STOP["signal"],))
        again.daemon = True
        again.start()

    return hook


def _finish_logging_fork_hook(fn) -> None:
    """Release logging's module lock if `fn` is the at-fork hook that was interrupted before releasing it
    (`_releaseLock` to Python 3.12, `_afterFork` from 3.13); no-op if it had already released it."""
    import contextlib

    if getattr(fn, "__module__", None) == "logging" and getattr(fn, "__name__", "") in ("_releaseLock", "_afterFork"):
        with contextlib.suppress(RuntimeError):  # released before the signal came: nothing to finish
            fn()


STOP_GRACE_S = 20  # how long a stopped command may take to unwind (Ray shut down) before it just exits


def _exit_if_stuck(code: int) -> None:
    """Exit with `code` if the process is still alive STOP_GRACE_S after a stop signal. A SIGTERM sent to
    the whole process group (systemd, Slurm's scancel) stops Ray's own processes too; unwinding then waits
    60 s for a GCS that is gone and Ray ends the process itself, exit 1. Committed parts are on disk
    already (each is renamed into place whole), so nothing is lost by not waiting."""
    import threading
    import time

    def watch():
        time.sleep(STOP_GRACE_S)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        os._exit(code)

    threading.Thread(target=watch, name="stop-grace", daemon=True).start()


def _stop_line() -> None:
    """`interrupted|terminated`, with the resume command when the output folder holds a run to finish."""
    import signal

    from curate.io.rundir import RunDir

    term = _STOP.get("signal") == signal.SIGTERM
    out = _option_value(("-o", "--output")) or _option_value(("--retry-failed",))
    resumable = _command() == "run" and out and RunDir(out).exists()
    hint = f"; finish it with: curate run --resume -o {out}" if resumable else ""
    if resumable and _droppable_retry(RunDir(out)):  # the run itself stays complete: the retry may be dropped
        hint += f", or drop the retry with: curate run --retry-failed {out} --abandon"
    err_console.print(f"{'terminated' if term else 'interrupted'}{hint}", highlight=False)
    _STOP["printed"] = 1


def _droppable_retry(run) -> bool:
    """Whether the run's last pass is a --retry-failed that --abandon can still drop (stopped before it began
    moving its parts into place: after that only --resume finishes it), whichever command was stopped."""
    from curate.io.manifest import COMMITTING, ManifestError

    try:
        retry = run.load_manifest().pending_retry
    except (ManifestError, OSError):
        return False
    return retry is not None and retry.status != COMMITTING


def _stopped() -> None:
    """One line for Ctrl-C or SIGTERM (printed when the signal came, or now) and the exit code (130, 143)."""
    import signal

    if "printed" not in _STOP:
        _stop_line()
    sys.exit(143 if _STOP.get("signal") == signal.SIGTERM else 130)


def _stopped_if_signalled() -> None:
    """After a stop signal, whatever error the command ends with is the stop (exit 130/143, its one line):
    code that catches the KeyboardInterrupt and raises its own error (pydantic-core building a stage's
    schema turns it into a SchemaError; a stage's import into a RecipeError) made a Ctrl-C look like a
    bug (exit 1) or the user's mistake (exit 2)."""
    if "signal" in _STOP:
        _stopped()


def _option_value(names: tuple[str, ...]) -> str | None:
    """The value given to one of these options on the command line (`-o X`, `--output=X`), if any."""
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a in names and i + 1 < len(args):
            return args[i + 1]
        for n in names:
            if n.startswith("--") and a.startswith(n + "="):
                return a[len(n) + 1:]
    return None


def _command() -> str | None:
    """The subcommand of this invocation (the first argument that is not an option)."""
    return next((a for a in sys.argv[1:] if not a.startswith("-")), None)


def _fail(message: str, code: int = 2):
    _error_line(message)
    raise typer.Exit(code)


def _error_line(message: str) -> None:
    """One `error:` line; the message may quote user data, so it is never read as markup or escapes."""
    from rich.markup import escape

    from curate.display import printable

    err_console.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


_ALLOW_EXTERNAL = typer.Option(False, "--allow-external",
                               help="Let the SQL reach beyond the run (COPY TO, ATTACH, other files, extensions).")


EXIT_BUG, EXIT_USER, EXIT_ALL_FAILED = 1, 2, 3  # docs/cli.md


def _version(value: bool) -> None:
    if value:
        from curate import __version__

        out_console.print(f"curate {__version__}", highlight=False, markup=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="More output: -v info and Ray's own warnings and worker logs, -vv debug."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results and errors: no progress, no warnings."),
):
    """Build multimodal pre-training datasets: download, dedup, filter, shard, validate."""
    import logging

    from curate import progress

    if verbose and quiet:
        _fail("use -v or -q, not both")
    if quiet:
        progress.set_log_level(logging.ERROR)
    elif verbose:
        progress.set_log_level(logging.DEBUG if verbose > 1 else logging.INFO)
    else:
        try:
            progress.parse_level(os.environ.get("CURATE_LOG_LEVEL") or "warning")
        except ValueError as err:
            _fail(f"CURATE_LOG_LEVEL: {err}")
        progress.set_log_level(None)
    if not logging.getLogger().handlers:  # curate's own warnings, one plain line each
        logging.basicConfig(format="%(levelname)s: %(message)s", stream=sys.stderr)


def _progress():
    """The progress display on stderr: (context manager, Runner.on_progress); its `.rows` is Runner.on_rows."""
    from curate.progress import ProgressView

    view = ProgressView(err_console)
    return view, view.parts


def print_truth_table(title: str, rows: list[dict], kind_col: str = "noise", key: str = "noise") -> None:
    """A demo's ground truth: per planted kind, how many rows ended as expected, and the top outcomes."""
    table = Table(title=title)
    for col in (kind_col, "rows", "expected", "as expected", "outcomes"):
        table.add_column(col, justify="right" if col in ("rows", "as expected") else "left")
    for r in rows:
        table.add_row(r[key], str(r["rows"]), r["expected"], f"{100 * r['as_expected'] / r['rows']:.0f}%",
                      ", ".join(f"{k} {v}" for k, v in r["outcomes"].most_common(3)))
    out_console.print(table)


def print_funnel(manifest, console: Console = out_console) -> None:
    """Rows in, kept, and dropped/failed per stage and reason (of a curate.io.manifest.Manifest)."""
    from curate.io.manifest import Counts

    c = manifest.counts or Counts()
    rows = c.rows
    table = Table(title=f"funnel: {manifest.name}", show_lines=False)
    table.add_column("outcome")
    table.add_column("stage/reason")
    table.add_column("rows", justify="right")
    table.add_column("%", justify="right")

    def pct(n):
        return f"{100 * n / rows:.1f}" if rows else "-"

    derived = c.derived or 0  # rows a stage derived from input rows (video clips, a custom stage's splits)
    if derived:
        rows -= derived
        table.add_row("input", "", str(rows), "100.0")
        table.add_row("derived", "(rows with a parent_uid: % of input rows)", str(derived), pct(derived))
    else:
        table.add_row("input", "", str(rows), "100.0")
    table.add_row("[green]kept[/]", "", str(c.kept), pct(c.kept))
    for status, by_reason in (("dropped", c.dropped), ("failed", c.failed)):
        for key, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
            table.add_row(status, key, str(n), pct(n))
    console.print(table)


@app.command()
def run(
    recipe: Optional[str] = typer.Argument(None, help="Recipe YAML file, or the name of a shipped recipe (e.g. image_text); "
                                           "with --resume or --retry-failed it may be left out: the run's saved recipe.yaml."),
    input: Optional[str] = typer.Option(None, "--input", "-i", help="URL list (parquet, csv, jsonl), image folder or WebDataset tars; overrides input.path."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Run directory; overrides output.path."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value: stage.field=value (repeatable)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Existing Ray cluster (default: RAY_ADDRESS or local)."),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted run in --output."),
    retry_failed: Optional[str] = typer.Option(None, "--retry-failed", help="Re-run only the failed rows of this run directory."),
    abandon: bool = typer.Option(False, "--abandon", help="With --retry-failed DIR: drop a retry that stopped before finishing; the run is left exactly as it was before it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and the stage plan; run and write nothing."),
):
    """Run a recipe into a run directory (shards/, meta/, manifest.json)."""
    from curate.recipe import load_recipe
    from curate.runner import Runner

    if abandon:
        return _abandon_retry(retry_failed, recipe, resume, set_)
    if retry_failed:
        if output and Path(output).resolve() != Path(retry_failed).resolve():
            _fail("--retry-failed writes into the run it retries; drop --output or make it the same folder")
        output = retry_failed
    if recipe is None:
        recipe = _saved_recipe_path(output, resume or bool(retry_failed))
    rec = load_recipe(recipe, set_, input_path=input, output_path=output)
    if dry_run:
        return _dry_run(rec)
    view, update = _progress()
    runner = Runner(rec, ray_address=ray_address, on_progress=update, on_rows=view.rows if view.enabled else None)
    with view:
        manifest = runner.retry_failed() if retry_failed else runner.start(resume=resume)
    print_funnel(manifest)
    out_console.print(f"run directory: {runner.run.root}", highlight=False, markup=False)
    _exit_if_all_failed(manifest)


def _abandon_retry(run_dir: str | None, recipe: str | None, resume: bool, set_: list[str]) -> None:
    """`curate run --retry-failed DIR --abandon`: drop the unfinished retry, print the run as it is again."""
    from curate.io.manifest import Manifest
    from curate.runner import abandon_retry

    if not run_dir:
        _fail("--abandon drops an unfinished retry: use it as --retry-failed DIR --abandon")
    if recipe or resume or set_:
        _fail("--abandon takes only --retry-failed DIR (it runs no recipe)")
    before: Manifest = abandon_retry(run_dir)
    out_console.print(f"dropped the unfinished retry; {run_dir} is as it was before it", highlight=False, markup=False)
    print_funnel(before)


def _saved_recipe_path(output: str | None, continuing: bool) -> str:
    """The recipe.yaml a run saved (every default and --set value resolved), for `curate run --resume -o OUT`
    without repeating the recipe and its --set flags."""
    from curate.io import storage
    from curate.io.rundir import RunDir

    if not continuing:
        _fail("missing RECIPE: a recipe file or a shipped recipe's name (curate stages lists the stages; "
              "pipelines/ holds the shipped recipes)")
    if not output:
        _fail("--resume without a RECIPE needs --output: the run directory whose saved recipe.yaml to finish")
    storage.preflight(output)  # s3://...: a missing bucket or bad credentials are one line
    run = RunDir(output)
    saved = run.recipe  # local or on an object store (load_recipe reads either)
    if not saved.exists():
        _fail(f"nothing to resume: {output} holds no run (no recipe.yaml)")
    if run.retry_recipe.exists() and _pending_retry(run):  # --resume finishes a stopped retry with its recipe
        return str(run.retry_recipe)
    return str(saved)


def _pending_retry(run) -> bool:
    """Whether the run's last batch is a --retry-failed that has not finished (an unreadable manifest: no;
    the runner reports it in its own words)."""
    from curate.io.manifest import ManifestError

    try:
        return run.load_manifest().pending_retry is not None
    except ManifestError:
        return False


def _dry_run(rec) -> None:
    """The resolved recipe (YAML, every default filled in) and the plan: which stages fuse into which Ray
    operator, which run as jobs. Starts no Ray and writes nothing."""
    import yaml

    from curate.runner import plan_lines, stage_plan

    # plain writes: the output is valid YAML (the plan lines are comments), untouched by rich
    sys.stdout.write("# resolved recipe\n" + yaml.safe_dump(rec.to_dict(), sort_keys=False) + "# plan\n")
    sys.stdout.write("".join(f"# {line}\n" for line in plan_lines(stage_plan(rec))))


def _exit_if_all_failed(manifest: dict) -> None:
    """Exit 3 (with a warning) when a run finished but every row in it failed: nothing was even judged."""
    c = manifest.get("counts") or {}
    rows, failed = c.get("rows", 0), sum((c.get("failed") or {}).values())
    if rows and failed == rows:
        top = max((c.get("failed") or {}).items(), key=lambda kv: kv[1])[0]
        err_console.print(f"warning: every row failed ({rows} rows; most often {top}): {_all_failed_hint(top)}; "
                          "exit code 3", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_ALL_FAILED)


# where to look when every row failed at a stage: "the input URLs" misled when a model server was down
_FETCHING = ("download", "doc_download", "download_video", "parse_documents")


def _all_failed_hint(top: str) -> str:
    """What to check, by the stage most rows failed at (`stage/reason`)."""
    stage = top.split("/", 1)[0]
    if stage in _FETCHING:
        return "check the input URLs, the network and the recipe"
    if stage in ("input", "load_image"):
        return "check the input (its columns, format and images)"
    from curate.endpoint.errors import REASONS as ENDPOINT_REASONS  # (a dict, no client imported)

    if any(top.endswith("_" + code) for code in ENDPOINT_REASONS):  # mllm_timeout, recaption_http_error, ...
        return f"check the model server {stage} asks (base_url, model, the server's log); each row's `error` says what it answered"
    return f"check {stage}'s settings; each row's `error` column says what went wrong"


@app.command()
def query(
    out: str = typer.Argument(..., help="Run directory."),
    sql: str = typer.Argument(..., help="SQL over views samples, kept, dropped, failed, shards."),
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    allow_external: bool = _ALLOW_EXTERNAL,
):
    """Query a run's metadata with DuckDB (SELECT only, reading only the run, unless --allow-external).
    Several statements (`SELECT 1; SELECT 2`) show each result in order, as DuckDB's own CLI does."""
    from curate.catalog import stream_each

    _check_format(format)
    for cols, chunks in stream_each(out, sql, external=allow_external):
        _emit(cols, chunks, format)


def _check_format(format: str) -> None:
    """query, inspect and clusters print table, csv or json; anything else is refused (it printed a table)."""
    if format not in ("table", "csv", "json"):
        _fail(f"--format must be table, csv or json, not {format!r}")


# a terminal table of more rows is unreadable and slow to lay out (300k rows: 30 s, 0.5 GB); csv/json print all
TABLE_MAX_ROWS = 1000


def _emit(cols, chunks, format: str) -> None:
    """Rows (an iterable of row lists) as csv, json or a table, written as they come. Cells are data: never
    markup, and control characters cannot reach a terminal (json escapes them losslessly; csv keeps bytes
    exact unless stdout is a terminal). A table shows the first TABLE_MAX_ROWS rows and says how many more."""
    from curate.display import cell, json_line, printable

    if format == "csv":
        clean = printable if sys.stdout.isatty() else (lambda v: v)
        w = csv.writer(sys.stdout, lineterminator="\n")  # LF like every other Unix tool (csv's default is CRLF)
        w.writerow([clean(str(c)) for c in cols])
        for rows in chunks:
            w.writerows([[clean(v) if isinstance(v, str) else v for v in r] for r in rows])
    elif format == "json":  # one array on one line, as json_line would write it whole
        sep = "["
        for rows in chunks:
            for r in rows:
                sys.stdout.write(sep + json_line(dict(zip(cols, r))))
                sep = ", "
        sys.stdout.write("[]\n" if sep == "[" else "]\n")
    else:
        table = Table(show_lines=False)
        for c in cols:
            table.add_column(cell(c), overflow="fold")
        shown = total = 0
        for rows in chunks:
            total += len(rows)
            for r in rows[:max(0, TABLE_MAX_ROWS - shown)]:
                table.add_row(*[cell(v) for v in r])
                shown += 1
        out_console.print(table)
        if total > shown:
            err_console.print(f"(showing the first {shown} of {total} rows: add LIMIT, or use --format csv or json "
                              "for all of them)", markup=False, highlight=False)


@app.command()
def inspect(
    out: str = typer.Argument(..., help="Run directory."),
    uid: Optional[str] = typer.Option(None, "--uid", help="Show this sample."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL condition over `samples`."),
    limit: int = typer.Option(10, "--limit", "-n", min=1),
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    allow_external: bool = _ALLOW_EXTERNAL,
):
    """Show samples (every column, including why they were dropped) by uid or condition."""
    from curate.catalog import query as run_query
    from curate.display import cell

    _check_format(format)
    if uid and where:
        _fail("use --uid or --where, not both")
    if where is not None and not where.strip():
        _fail("--where needs a condition, e.g. \"status = 'dropped'\"")
    cond = "uid = '" + uid.replace("'", "''") + "'" if uid else (where or "true")
    # in parentheses: --where is one condition; "a; SELECT ..." or "a LIMIT 5" is a syntax error, not a
    # second statement whose result would replace the samples shown
    cols, rows = run_query(out, f"SELECT * FROM samples WHERE ({cond}) ORDER BY row LIMIT {int(limit)}",
                           external=allow_external)
    if uid and not rows:
        _fail(f"no sample with uid {uid!r} in {out}")
    if format != "table":
        _emit(cols, [rows], format)
        return
    for r in rows:
        t = Table(show_header=False, box=None)
        t.add_column(style="bold cyan")
        t.add_column(overflow="fold")
        for c, v in zip(cols, r):
            if v is not None:
                t.add_row(cell(c), cell(v))
        out_console.print(t)
        out_console.rule()
    out_console.print(f"{len(rows)} sample(s)")


@app.command()
def clusters(
    out: str = typer.Argument(..., help="Run directory."),
    column: Optional[str] = typer.Option(None, "--column", "-c", help="A *_cluster column, or dup_of (default: the "
                                         "run's first *_cluster column, else dup_of)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="List the members of this cluster."),
    limit: int = typer.Option(20, "--limit", "-n", min=1),
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    allow_external: bool = _ALLOW_EXTERNAL,
):
    """List duplicate clusters (largest first) or one cluster's members, from a dedup column."""
    from curate.catalog import query as run_query

    _check_format(format)
    have = _cluster_columns(out)
    if have == [] and column is None:
        _fail(f"{out}: this run has no dedup column (no *_cluster, no dup_of): its recipe ran no dedup stage")
    column = column or next((c for c in have or () if c != "dup_of"), "dup_of")
    if not (column.endswith("_cluster") or column == "dup_of") or not column.replace("_", "").isalnum():
        _fail(f"--column must be a *_cluster column or dup_of, not {column!r}")
    if have is not None and column not in have:
        _fail(f"--column {column}: this run has no such column; it has {', '.join(have) or 'no dedup column'}")
    # dup_of points at the kept sample: the cluster of a kept sample is its own uid
    key = "coalesce(dup_of, uid)" if column == "dup_of" else column
    if cluster:
        sql = (f"SELECT {key} AS cluster, uid, status, stage, reason, text, url FROM samples "
               f"WHERE {key} = '{cluster.replace(chr(39), chr(39) * 2)}' ORDER BY status = 'ok' DESC, uid")
    else:
        sql = (f"SELECT {key} AS cluster, count(*) AS size, count(*) FILTER (WHERE status = 'ok') AS kept, "
               f"list(uid ORDER BY uid)[:5] AS members FROM samples WHERE {key} IS NOT NULL "
               f"GROUP BY 1 HAVING count(*) > 1 ORDER BY size DESC, cluster LIMIT {int(limit)}")
    cols, rows = run_query(out, sql, external=allow_external)
    _emit(cols, [rows], format)


def _cluster_columns(out: str) -> list[str] | None:
    """The run's dedup columns (*_cluster, then dup_of) from its first meta part; None when there is no part
    to read (the query then reports what is wrong with the folder)."""
    from curate.io import storage
    from curate.io.rundir import RunDir

    try:
        names = storage.read_metadata(storage.glob(RunDir(out).meta, "part-*.parquet")[0]).schema.to_arrow_schema().names
    except Exception:  # noqa: BLE001 - no run, no parts, unreadable: `query` says which, in one line
        return None
    return sorted(n for n in names if n.endswith("_cluster")) + (["dup_of"] if "dup_of" in names else [])


@app.command()
def validate(
    out: str = typer.Argument(..., help="Run directory."),
    no_decode: bool = typer.Option(False, "--no-decode", help="Skip decoding images (faster)."),
):
    """Check that every shard is unchanged since written (SHA-256) and every member decodes and matches its row."""
    from curate.io.rundir import RunDir
    from curate.validate import validate as check

    problems, stats = check(out, decode=not no_decode)  # (its storage preflight: one line, exit 2)
    run = RunDir(out)
    if not stats and not run.exists() and not run.meta.exists():  # a wrong path: the user's error, not a finding
        raise UserError(f"{out} is not a curate run directory (no manifest.json, no meta/)")
    if problems:
        from curate.display import printable

        err_console.print(f"{len(problems)} problem(s) in {printable(out)}:", highlight=False, markup=False)
        for p in problems:
            err_console.print(f"  - {printable(p)}", highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(1)
    out_console.print(f"ok: {stats['rows']} rows, {stats['kept']} kept samples in {stats['shards']} shards, "
                      f"{stats['members']} members checked", highlight=False)


@app.command()
def refilter(
    out: str = typer.Argument(..., help="A finished run directory (only read)."),
    where: str = typer.Option(..., "--where", help="SQL condition over `samples` that kept rows must meet, e.g. \"clip_score >= 0.3\"."),
    output: str = typer.Option(..., "--output", "-o", help="New run directory to write."),
):
    """Re-decide an already-scored run with a new condition (no model runs): OUT -> OUT2."""
    from curate.refilter import refilter as run_refilter

    manifest = run_refilter(out, where, output)
    print_funnel(manifest)
    out_console.print(f"run directory: {output}", highlight=False)


@app.command()
def reshard(
    out: str = typer.Argument(..., help="A finished run directory (only read)."),
    samples_per_shard: int = typer.Option(..., "--samples-per-shard", help="Kept samples per new shard."),
    output: str = typer.Option(..., "--output", "-o", help="New run directory to write."),
):
    """Regroup a run's kept samples into shards of N (rows in = rows out; members copied byte for byte)."""
    from curate.reshard import OutputError, reshard as run_reshard

    try:
        manifest = run_reshard(out, samples_per_shard, output)
    except OutputError as err:
        raise UserError(str(err)) from None
    out_console.print(f"{manifest.counts.kept} kept samples in {len(manifest.parts)} shards: {output}",
                      highlight=False)


@app.command()
def export(
    out: str = typer.Argument(..., help="A finished run directory (only read)."),
    format: str = typer.Option(..., "--format", help="uids (DataComp-style .npy subset) or parquet (kept samples with image bytes)."),
    output: str = typer.Option(..., "--output", "-o", help="File (.npy) or new folder to write."),
    uid_col: str = typer.Option("uid", "--uid-col", help="uids: the id column to export (input_uid for DataComp's own uids)."),
):
    """Export kept samples for the next tool: a uid subset or a Parquet dataset with image bytes."""
    from curate.export import export as run_export
    from curate.reshard import OutputError

    try:
        info = run_export(out, format, output, uid_col=uid_col)
    except OutputError as err:
        raise UserError(str(err)) from None
    out_console.print(", ".join(f"{k}: {v}" for k, v in info.items()), highlight=False)


@app.command()
def report(out: str = typer.Argument(..., help="Run directory.")):
    """(Re)write OUT/report.html: funnel, score and size distributions, duplicates, sample grids."""
    from curate.report import ReportError, report_main

    try:
        path = report_main(out)
    except ReportError as err:
        _fail(str(err))
    out_console.print(f"wrote {path}", highlight=False)


@app.command()
def stages(
    name: Optional[str] = typer.Argument(None, help="Show one stage in detail."),
    markdown: bool = typer.Option(False, "--markdown", help="Markdown (for docs/): every stage with settings, columns, reasons."),
):
    """List the stages recipes can use, with their settings and the reason codes they set."""
    from curate.stage import load_builtin_steps

    registry = load_builtin_steps()
    if name and name not in registry:
        _fail(f"unknown stage {name!r} (known: {', '.join(sorted(registry))})")
    keys = [name] if name else sorted(registry)
    if markdown:
        from curate.stage_docs import render_markdown  # the same page as docs/stages.md (one renderer)

        sys.stdout.write(render_markdown({name: registry[name]} if name else None))
        return
    for key in keys:
        cls = registry[key]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        # docstrings and reasons are text: "[min, max]" must not be read as rich markup
        out_console.print(f"{key} ({cls.kind}) {doc}", highlight=False, markup=False, soft_wrap=True)
        for field, info in cls.model_fields.items():
            if info.is_required():
                out_console.print(f"    {field} (required)", highlight=False, markup=False)
                continue
            default = info.get_default(call_default_factory=True)
            out_console.print(f"    {field} = {default!r}", highlight=False, markup=False, soft_wrap=True)
        if cls.writes:
            out_console.print(f"    writes: {', '.join(cls.writes)}", highlight=False, markup=False, soft_wrap=True)
        for code, why in cls.reasons.items():
            out_console.print(f"    reason {code}: {why}", highlight=False, markup=False, soft_wrap=True)


# --- validation loop: curate train / eval / experiment (curate/train/) ---------------------------------

def _train_config(shards, output, model, samples_seen, batch_size, lr, warmup, weight_decay, seed, loss,
                  workers, checkpoint_every, log_every, compile_, precision, threads, recaption_prob=0.0,
                  video_frames=0):
    from curate.train.loop import TrainConfig

    return TrainConfig(shards=list(shards), output=output, model=model, samples_seen=samples_seen,
                       batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay, seed=seed,
                       loss=loss, workers=workers, checkpoint_every=checkpoint_every, log_every=log_every,
                       compile=compile_, precision=precision, threads=threads, recaption_prob=recaption_prob,
                       video_frames=video_frames)


def _train_errors():
    from curate.train.checkpoints import CheckpointError
    from curate.train.data import DataError
    from curate.train.evaluate import EvalError
    from curate.train.loop import TrainError

    return (TrainError, EvalError, DataError, CheckpointError)


def _fail_train(err: Exception):
    """A training error's one line and exit 2; under torchrun a rank whose error is `quiet` (another rank,
    rank 0, reports it: curate.train.loop._agree) exits 2 without a line, so the line is printed once."""
    _leave_process_group()
    if getattr(err, "quiet", False):
        raise typer.Exit(2)
    _fail(str(err))


def _leave_process_group() -> None:
    """Destroy torch.distributed's process group if this process joined one: a rank that exited with it
    still up sometimes aborted in gloo's teardown ("terminate called without an active exception", exit 134)
    instead of exiting 2. A local call: after an agreed failure no collective is in flight."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _num(x, fmt: str = ".3f") -> str:
    """A number for a summary line, "n/a" for a missing one (a summary may lack a loss)."""
    return "n/a" if x is None else format(x, fmt)


@app.command()
def train(
    shards: list[str] = typer.Argument(..., help="WebDataset shards: files, folders, globs or {000000..000009} ranges."),
    output: str = typer.Option(..., "--output", "-o", help="Training folder: log.jsonl, checkpoint.pt, summary.json."),
    model: str = typer.Option("curate-tiny", "--model", help="open_clip model name (curate-tiny ships with curate)."),
    samples_seen: int = typer.Option(..., "--samples-seen", min=1, help="Training budget in samples (all ranks)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Per-rank batch size."),
    lr: float = typer.Option(1e-3, "--lr"),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Linear warmup steps before the cosine decay."),
    weight_decay: float = typer.Option(0.1, "--wd", "--weight-decay"),
    seed: int = typer.Option(0, "--seed"),
    loss: str = typer.Option("clip", "--loss", help="clip, siglip, or coca (for CoCa models: contrastive + captioning)."),
    recaption_prob: float = typer.Option(0.0, "--recaption-prob", min=0.0, max=1.0,
                                         help="Train on a sample's synthetic caption (.recap.txt) instead of .txt with this probability."),
    video_frames: int = typer.Option(0, "--video-frames", min=0, max=16,
                                     help="Video shards: each clip (.mp4) as a storyboard of this many frames (0 = images)."),
    workers: int = typer.Option(1, "--workers", min=0, help="Data loader worker processes per rank."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0, help="Also keep checkpoints/step_N.pt every N steps."),
    log_every: int = typer.Option(10, "--log-every", min=1),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on GPU), fp32 or bf16."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0 = default)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/checkpoint.pt."),
):
    """Contrastive image-text pretraining of an open_clip model on shards (DDP under torchrun)."""
    from curate.train.loop import train as run_train

    cfg = _train_config(shards, output, model, samples_seen, batch_size, lr, warmup, weight_decay, seed, loss,
                        workers, checkpoint_every, log_every, compile_, precision, threads, recaption_prob,
                        video_frames)

    def show(rec):
        n = rec.get("loss_steps", 1)
        loss = f"loss {rec['loss']:.4f}" + (f" (mean of {n} steps)" if n > 1 else "")
        err_console.print(f"step {rec['step']}  samples {rec['samples_seen']}  {loss}  "
                          f"lr {rec['lr']:.2e}  {rec['samples_per_s']:.0f} samples/s  "
                          f"data wait {100 * rec['data_wait_frac']:.0f}%", highlight=False)

    try:
        s = run_train(cfg, resume=resume, on_log=show)
    except _train_errors() as err:
        _fail_train(err)
    if s["rank"] != 0:  # under torchrun: rank 0 reports for all ranks
        return
    if s.get("already_complete"):
        out_console.print(f"{output}: already complete ({s['steps']} steps, {s['samples_seen']} samples), nothing to do",
                          highlight=False)
        return
    skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"
    out_console.print(f"trained {s['steps']} steps ({s['samples_seen']} samples) in {s['seconds']:.0f} s, "
                      f"{s['samples_per_s']:.0f} samples/s, data wait {100 * s['data_wait_frac']:.0f}%, "
                      f"loss {_num(s['first_loss'])} at step 1 -> {_num(s['final_loss'])} at step {s['steps']} (single steps); skipped samples: {skipped}", highlight=False)
    out_console.print(f"checkpoint: {s['checkpoint']}", highlight=False)


@app.command("eval")
def eval_(
    ckpt: str = typer.Argument(..., help="Checkpoint (from curate train, or any open_clip checkpoint with --model)."),
    eval_set: str = typer.Option(..., "--eval-set", help="Folder of labelled tars plus classes.json."),
    model: Optional[str] = typer.Option(None, "--model", help="open_clip model name, for a checkpoint that does not record one (curate train's do; a different name is refused)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Also write the metrics as JSON here."),
):
    """Zero-shot classification and image<->text retrieval R@1/R@5 on a held-out labelled set."""
    from curate.train.evaluate import evaluate

    try:
        res = evaluate(ckpt, eval_set, model_name=model)
    except _train_errors() as err:
        _fail_train(err)
    if output:
        from curate.io import atomic, storage

        atomic.write_bytes(storage.as_path(output), json.dumps(res, indent=1).encode())  # local or s3://...
    table = Table(title=f"{res['model']} on {res['samples']} samples (skipped: {res['skipped'] or 'none'})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("chance", justify="right")
    for k in ("zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "image_to_text_R@5",
              "text_to_image_R@1", "text_to_image_R@5"):
        if res.get(k) is not None:
            table.add_row(k, f"{res[k]:.4f}", f"{res['chance'][k]:.4f}")
    for a, v in res["attributes"].items():
        if v["top1"] is not None:
            table.add_row(f"zero-shot {a} (majority class)", f"{v['top1']:.4f}", f"{v['chance']:.4f}")
    out_console.print(table)


@app.command()
def experiment(
    sets: Optional[list[str]] = typer.Argument(None, help="NAME=SHARDS[,SHARDS] per data set; the first is compared with the rest."),
    eval_set: Optional[str] = typer.Option(None, "--eval-set", help="Folder of labelled tars plus classes.json."),
    samples_seen: Optional[int] = typer.Option(None, "--samples-seen", min=1),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Seeds per data set, paired by seed (default 5)."),
    output: str = typer.Option("experiment-out", "--output", "-o"),
    model: str = typer.Option("curate-tiny", "--model"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    warmup: int = typer.Option(10, "--warmup", min=0),
    weight_decay: float = typer.Option(0.1, "--wd", "--weight-decay"),
    loss: str = typer.Option("clip", "--loss"),
    workers: int = typer.Option(1, "--workers", min=0),
    threads: int = typer.Option(0, "--threads", min=0),
    video_frames: int = typer.Option(0, "--video-frames", min=0, max=16,
                                     help="Video shards: each clip (.mp4) as a storyboard of this many frames (0 = images)."),
    recaption_prob: list[str] = typer.Option([], "--recaption-prob",
                                             help="NAME=P: train data set NAME on .recap.txt with probability P (repeatable)."),
    random_subset: list[str] = typer.Option([], "--random-subset",
                                            help="NAME=OF:SIZE_OF: a control arm, a random subset of OF with SIZE_OF's size (per seed)."),
    primary: list[str] = typer.Option([], "--primary", help="Primary metric, named before the runs (repeatable; default zeroshot_top1)."),
    validation_set: Optional[str] = typer.Option(None, "--validation-set", help="Labelled split for choosing settings (--sweep); never the eval set."),
    sweep: list[str] = typer.Option([], "--sweep", help="KEY=V1,V2: candidates chosen on --validation-set (repeatable)."),
    config: Optional[str] = typer.Option(None, "--config", help="Experiment YAML: arms, eval_set, validation_set, seeds, primary_metrics, sweep, compare, train."),
    ground_truth: Optional[str] = typer.Option(None, "--ground-truth", help="Demo corpus (folder or corpus.parquet): report each curated arm's decisions against its planted labels."),
    arms_only: Optional[str] = typer.Option(None, "--arms", help="NAME[,NAME] or NAME@SEED: train and evaluate only these data sets or runs (parallel workers on one --output); a final run without it reuses their runs and writes the report."),
):
    """Train one model per data set and seed at identical settings, evaluate, report verdicts from paired intervals."""
    from curate.train.experiment import (Arm, load_config, parse_set_options, parse_sets, parse_subsets, parse_sweep,
                                         run_experiment, spec_from_config)

    try:
        spec, train_cfg = spec_from_config(load_config(config) if config else {}, where=config or "")
        parsed = parse_sets(sets or [])
        for name, shards in parsed.items():
            spec.arms[name] = Arm(name, shards=shards)
        for arm in parse_subsets(random_subset):
            spec.arms[arm.name] = arm
        for name, o in parse_set_options(recaption_prob, spec.arms, "recaption_prob").items():
            spec.arms[name].overrides.update(o)
        spec.eval_set = eval_set or spec.eval_set
        spec.validation_set = validation_set or spec.validation_set
        spec.seeds = seeds or spec.seeds
        spec.primary_metrics = list(primary) or spec.primary_metrics
        spec.sweep.update(parse_sweep(sweep))
        spec.ground_truth = ground_truth or spec.ground_truth
        if not spec.eval_set:
            _fail("give --eval-set (or eval_set in --config)")
        if samples_seen:
            train_cfg["samples_seen"] = samples_seen
        if not train_cfg.get("samples_seen"):
            _fail("give --samples-seen (or train.samples_seen in --config)")
        base = _train_config([], output, train_cfg.get("model", model), train_cfg["samples_seen"],
                             train_cfg.get("batch_size", batch_size), train_cfg.get("lr", lr),
                             train_cfg.get("warmup", warmup), train_cfg.get("weight_decay", weight_decay), 0,
                             train_cfg.get("loss", loss), workers, 0, 10, False, "auto", threads,
                             video_frames=int(train_cfg.get("video_frames", video_frames)))
        res = run_experiment(spec, output, base, log=lambda m: err_console.print(m, highlight=False),
                             only=[x for x in (arms_only or "").split(",") if x] or None)
    except _train_errors() as err:
        _fail_train(err)
    if res.get("partial"):
        out_console.print(f"trained and evaluated {len(res['runs'])} run(s) of {arms_only}; run again without --arms "
                          "for the report", highlight=False)
        return
    from curate.train.experiment import _table_md, _verdicts, headline
    from curate.train.ranks import is_lead

    if not is_lead():  # under torchrun every rank returns the results; rank 0 prints them
        return
    top = headline(res)  # "no arm learned" goes above the table, as in report.md, not below it
    if top:
        out_console.print(top, highlight=False)
    out_console.print(_table_md(res), highlight=False)
    for v in _verdicts(res, with_headline=False):
        out_console.print(v, highlight=False)
    from curate.io.storage import as_path

    out_console.print(f"report: {as_path(output) / 'report.html'}  results: {as_path(output) / 'results.json'}",
                      highlight=False)


def _truth_html(truth: list[dict]) -> str:
    import html

    rows = "".join(
        f"<tr><td>{html.escape(r['noise'])}</td><td>{r['rows']}</td><td>{html.escape(r['expected'])}</td>"
        f"<td>{100 * r['as_expected'] / r['rows']:.0f}%</td>"
        f"<td>{html.escape(', '.join(f'{k} {v}' for k, v in r['outcomes'].most_common()))}</td></tr>"
        for r in truth)
    return ("<p>Each planted noise kind, what the reference pipeline should do with it, and what this run did.</p>"
            "<table><tr><th>noise</th><th>rows</th><th>expected</th><th>as expected</th><th>outcomes</th></tr>"
            f"{rows}</table>")


def _filter_html(q: dict) -> str:
    return ("<p>The filter CLIP was trained on the corpus' clean seed split only (Data Filtering Networks); "
            "here it is judged against the planted <code>mismatched_caption</code> labels, over the rows it "
            "scored. The score histogram is under Distributions (<code>clip_score</code>).</p>"
            "<table><tr><th>scored</th><th>planted mismatched</th><th>flagged</th><th>true positives</th>"
            "<th>precision</th><th>recall</th><th>score ROC AUC</th></tr>"
            f"<tr><td>{q['scored']}</td><td>{q['positives']}</td><td>{q['flagged']}</td><td>{q['true_positives']}</td>"
            f"<td>{q['precision']:.3f}</td><td>{q['recall']:.3f}</td><td>{q['auc']:.3f}</td></tr></table>")


@app.command()
def demo(
    output: str = typer.Option("demo-out", "--output", "-o", help="Run directory to write (replaced if it holds an earlier demo run; anything else is refused)."),
    samples: Optional[int] = typer.Option(None, "--samples", "-n", min=40, help="Corpus size (default 3000 image-text samples; 120 interleaved documents; not the video demo, whose corpus is fixed)."),
    seed: int = typer.Option(0, "--seed"),
    modality: str = typer.Option("image", "--modality", help="image, video or interleaved."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address"),
    set_: list[str] = typer.Option([], "--set", help="Override a value of the recipe (pipelines/image_text_clip.yaml)."),
    clip_filter: bool = typer.Option(True, "--clip-filter/--no-clip-filter",
                                     help="Train (once, cached) and apply the filter CLIP (image_text_clip); off: image_text."),
    filter_samples_seen: Optional[int] = typer.Option(None, "--filter-samples-seen", min=64,
                                                      help="Training length of the filter CLIP (default: curate.demo.filter.FILTER_SETTINGS)."),
    noise: str = typer.Option("tuned", "--noise", help="Planted noise: tuned (the families the stages were written against) "
                              "or held-out (families and parameters they never saw: curate.demo.heldout)."),
):
    """Generate a synthetic corpus with planted noise, serve it on 127.0.0.1, curate it, check the ground truth."""
    import tempfile

    from curate.demo.corpus import write_url_list
    from curate.demo.run import ensure_corpus, filter_quality, mark_demo_run, prepare_run_dir, truth_table
    from curate.demo.server import DemoServer
    from curate.recipe import load_recipe
    from curate.runner import Runner

    if modality == "interleaved":
        return _demo_interleaved(Path(output), samples, seed, ray_address, set_)
    if modality == "video":
        from curate.demo.video_run import run_video_demo

        return run_video_demo(Path(output), seed=seed, ray_address=ray_address, overrides=set_,
                              out_console=out_console, err_console=err_console, progress=_progress,
                              print_funnel=print_funnel, print_truth_table=print_truth_table,
                              truth_html=_truth_html, fail=_fail, samples=samples)
    if modality != "image":
        _fail(f"--modality {modality!r} is not available yet; use image, video or interleaved")
    if noise not in ("tuned", "held-out"):
        _fail(f"--noise {noise!r}: use tuned or held-out")
    samples = samples or 3000
    if samples < 200:
        _fail("--samples must be at least 200 for the image-text demo")
    out = Path(output)
    try:
        prepare_run_dir(out)
    except FileExistsError as err:
        _fail(str(err))
    corpus = ensure_corpus(samples, seed, log=lambda m: err_console.print(m, highlight=False), noise_mode=noise)
    recipe, overrides = "image_text", list(set_)
    if clip_filter:
        from curate.demo.filter import ensure_filter

        more = {"samples_seen": filter_samples_seen} if filter_samples_seen else {}
        ckpt = ensure_filter(corpus, log=lambda m: err_console.print(m, highlight=False), **more)
        recipe, overrides = "image_text_clip", [f"clip_score.checkpoint={ckpt}", *overrides]
    progress, update = _progress()
    with DemoServer(corpus) as server, tempfile.TemporaryDirectory() as tmp:
        urls = write_url_list(corpus, server.url, Path(tmp) / "urls.parquet")
        err_console.print(f"serving {samples} samples at {server.url}", highlight=False)
        rec = load_recipe(recipe, overrides, input_path=str(urls), output_path=str(out))
        runner = Runner(rec, ray_address=ray_address, on_progress=update,
                        on_rows=progress.rows if progress.enabled else None)
        try:
            with progress:
                manifest = runner.start()
        finally:  # finished or interrupted: the demo wrote it, so the next demo may replace it
            mark_demo_run(out)
    print_funnel(manifest)
    from curate.demo import truth as gt

    accuracy = gt.accuracy_report(out, corpus)
    truth = truth_table(out, corpus) if noise == "tuned" else []
    quality = filter_quality(out, corpus) if noise == "tuned" else None
    sections = [("Ground truth (demo)", _truth_html(truth))] if truth else []
    sections.append(("Decisions vs planted ground truth", gt.html_section(accuracy, out)))
    if quality:
        sections.append(("CLIP filter vs planted mismatched captions", _filter_html(quality)))
    runner.write_report(sections)
    if truth:
        print_truth_table("ground truth: planted noise vs outcome", truth)
    for s in accuracy["stages"]:
        out_console.print(f"{s['stage']}: dropped {s['dropped']}, planted among them {s['planted_dropped']} "
                          f"(precision {gt.pct(s['precision'])}), recall {gt.pct(s['recall'])} of the planted "
                          f"rows that reached it", highlight=False)
    if quality:
        out_console.print(f"CLIP filter vs planted mismatched captions: precision {quality['precision']:.2f}, "
                          f"recall {quality['recall']:.2f} ({quality['true_positives']} of {quality['flagged']} "
                          f"flagged, {quality['positives']} planted), score AUC {quality['auc']:.2f}", highlight=False)
    out_console.print(f"run directory: {out}   corpus (eval/ and seed/ splits): {corpus}", highlight=False)
    out_console.print(f'next: curate query {out} "SELECT reason, count(*) FROM dropped GROUP BY reason"', highlight=False)


def _demo_interleaved(out: Path, docs: int | None, seed: int, ray_address: str | None, set_: list[str]) -> None:
    """`curate demo --modality interleaved`: HTML pages with planted faults, pipelines/interleaved.yaml, ground truth."""
    import html

    from curate.demo.interleaved import DEFAULT_DOCS, run_demo, truth_table

    progress, update = _progress()
    try:
        with progress:
            manifest, corpus = run_demo(out, docs or DEFAULT_DOCS, seed, tuple(set_), ray_address, update)
    except (FileExistsError, ValueError) as err:
        _fail(str(err))
    print_funnel(manifest)
    rows, metrics = truth_table(out, corpus)
    print_truth_table("ground truth: planted document faults vs outcome", rows, kind_col="document kind", key="kind")
    acc, chance = metrics["placement_accuracy"], metrics["placement_chance"]
    lines = [f"images: {json.dumps(metrics['images'])}",
             f"placement: {metrics['placed']} images placed, accuracy {acc if acc is None else round(acc, 3)} "
             f"(chance {chance if chance is None else round(chance, 3)}; the demo's CLIP is a random-init curate-tiny "
             "unless you --set doc_clip.checkpoint=...)"]
    for line in lines:
        out_console.print(line, highlight=False)
    body = "".join(f"<tr><td>{html.escape(r['kind'])}</td><td>{r['rows']}</td><td>{html.escape(r['expected'])}</td>"
                   f"<td>{100 * r['as_expected'] / r['rows']:.0f}%</td></tr>" for r in rows)
    from curate.recipe import load_recipe
    from curate.runner import Runner

    Runner(load_recipe(str(out / "recipe.yaml"), output_path=str(out))).write_report([(
        "Ground truth (interleaved demo)",
        f"<table><tr><th>kind</th><th>rows</th><th>expected</th><th>as expected</th></tr>{body}</table>"
        + "".join(f"<p>{html.escape(x)}</p>" for x in lines))])
    out_console.print(f"run directory: {out}   corpus: {corpus}   read it: python examples/interleaved_loader.py {out}/shards/000000.tar",
                      highlight=False)


def _metavars() -> None:
    """Readable value names in --help: typer 0.29 shows each option's Python type (`--resume <bool>`, which
    reads as if it took a value, and `--set <list[str]>`). Flags get none, the others a word for their
    value; an option that names its own metavar keeps it."""
    import inspect
    import typing

    words = {bool: " ", int: "N", float: "X", str: "TEXT"}
    named = {"set_": "KEY=VALUE", "output": "DIR", "retry_failed": "DIR", "input": "PATH", "where": "SQL",
             "ray_address": "ADDRESS"}
    for command in app.registered_commands:
        hints = typing.get_type_hints(command.callback)
        for name, param in inspect.signature(command.callback).parameters.items():
            info = param.default
            if not isinstance(info, typer.models.OptionInfo) or info.metavar is not None:
                continue
            kind = hints.get(name)
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind = args[0] if args and typing.get_origin(kind) is typing.Union else kind
            info.metavar = " " if kind is bool else named.get(name) or words.get(kind, "TEXT")


def main(console: bool = False) -> None:
    """Console entry point: user and environment errors become one line and exit code 2; 1 means a bug.

    `console`: this process is the `curate` program (curate/entry.py, `python -m curate.cli`), so a stop
    signal may end the process STOP_GRACE_S later if the command does not unwind (_exit_if_stuck). A program
    that calls main() as a function (a notebook, a test) keeps its process: it gets SystemExit as before.

    The garbage collector: everything imported by now lives as long as the process, so it is frozen out of
    the collector's generations (every full collection during a run scans less), and frozen again at exit,
    where the interpreter's last collection over every module took ~0.5 s of a 6 s dedup run. The process
    ends right after, so nothing frozen is ever garbage that needed collecting."""
    import atexit
    import gc

    from curate.catalog import CatalogError
    from curate.io.reader import InputError
    from curate.models.clip import ModelLoadError
    from curate.recipe import RecipeError
    from curate.refilter import RefilterError
    from curate.io.storage import StorageError
    from curate.runner import RunError

    known = (RecipeError, RunError, InputError, CatalogError, ModelLoadError, UserError, RefilterError, StorageError)
    gc.freeze()
    atexit.register(gc.freeze)
    import signal
    import threading

    _STOP.clear()
    was_console, _PROGRAM["console"] = _PROGRAM["console"], console
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    unraisable = sys.unraisablehook
    if main_thread:
        sys.unraisablehook = _stop_unraisable(unraisable)
    try:  # (the SIGTERM handler is kept across Ray's start: runner.ray_session)
        _run_app(known)
    finally:  # an in-process caller (tests, a notebook) gets its own handlers back
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = unraisable
        _PROGRAM["console"] = was_console


def _run_app(known: tuple) -> None:
    """The command, with every way it can end turned into an exit code and at most one line on stderr."""
    try:
        rc = app(standalone_mode=False)
        if rc == 130:  # typer returns Ctrl-C inside a command as exit code 130
            _stopped()
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except known as err:
        _stopped_if_signalled()
        _error_line(str(err))  # [..] and control characters in it are text
        sys.exit(EXIT_USER)
    except KeyboardInterrupt:
        _stopped()
    except Exception as err:  # noqa: BLE001 - the last line of defence against tracebacks
        _stopped_if_signalled()
        # usage errors (missing argument, unknown option: exit 2) by class name: typer >= 0.29 raises its
        # vendored click's classes (typer._click), older typer the click package's
        kinds = {c.__name__ for c in type(err).__mro__}
        if "ClickException" in kinds:
            err.show()
            sys.exit(err.exit_code)
        if "Abort" in kinds:  # older click turns Ctrl-C inside a command into Abort
            _stopped()
        from curate.environment_errors import describe

        line = describe(err)  # disk full, permissions, Ray's memory: the machine's problem, not a bug
        if os.environ.get("CURATE_DEBUG"):
            raise
        if line:
            _error_line(line)
            sys.exit(EXIT_USER)
        _error_line(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    " (set CURATE_DEBUG=1 for the traceback)")
        sys.exit(EXIT_BUG)


_metavars()

if __name__ == "__main__":
    main(console=True)
