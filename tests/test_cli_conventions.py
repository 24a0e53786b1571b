"""CLI conventions (docs/cli.md): --version, -v/-q and CURATE_LOG_LEVEL, exit codes, run --dry-run, stages
--markdown, CSV line endings, and the progress view's plain lines. In-process and Ray-free: cheap."""
from __future__ import annotations

import io
import logging

import pyarrow as pa
import pytest
from rich.console import Console

from curate import __version__, progress
from curate.recipe import load_recipe
from curate.runner import plan_lines, stage_plan


def test_version(cli_inprocess):
    r = cli_inprocess("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"curate {__version__}"


def test_verbosity_flags_and_env(cli_inprocess):
    r = cli_inprocess("-v", "-q", "stages")
    assert r.returncode == 2 and "use -v or -q" in r.stderr
    try:
        assert cli_inprocess("-vv", "stages", "download").returncode == 0
        assert progress.log_level() == logging.DEBUG and progress.ray_verbose()
        assert cli_inprocess("-q", "stages", "download").returncode == 0
        assert progress.quiet() and not progress.ray_verbose()
    finally:
        progress.set_log_level(None)


def test_bad_log_level_env_is_a_user_error(capsys):
    from tests.conftest import curate_inprocess

    r = curate_inprocess("stages", capsys=capsys, env={"CURATE_LOG_LEVEL": "loud"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CURATE_LOG_LEVEL" in r.stderr


def test_missing_argument_exits_2(cli_inprocess):
    r = cli_inprocess("run")  # RECIPE is optional only with --resume / --retry-failed
    assert r.returncode == 2 and "missing RECIPE" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli_inprocess("query")
    assert r.returncode == 2 and "Missing argument" in r.stderr


def test_help_names_values_and_shows_flags_as_flags(cli_inprocess):
    """typer 0.29 prints each option's Python type (`--resume <bool>` reads as taking a value); cli._metavars
    gives flags no value name and the others a word."""
    import re

    r = cli_inprocess("run", "--help")
    assert r.returncode == 0
    text = re.sub(r"\s+", " ", r.stdout)
    assert "--set KEY=VALUE" in text and "-o DIR" in text and "<list[str]>" not in text
    assert re.search(r"--resume Finish", text) and "--resume <bool>" not in text


def test_dry_run_prints_recipe_and_plan_and_writes_nothing(cli_inprocess, tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    r = cli_inprocess("run", "image_text_clip", "-i", str(tmp_path / "urls.parquet"), "-o", str(out), "--dry-run",
                      "--set", "download.threads=3", "--set", f"clip_score.checkpoint={tiny_ckpt}")
    assert r.returncode == 0, r.stderr
    assert "name: image-text" in r.stdout and "threads: 3" in r.stdout  # resolved, overrides applied
    assert "operator 1: load input part -> download -> image_size -> caption_text -> write checkpoint" in r.stdout
    assert "job exact_dedup" in r.stdout and "job clip_top_fraction" in r.stdout
    # the model stage runs in an actor pool that the loading task fuses into; the write after it cannot fuse
    assert "load checkpoint + apply phash_dedup decisions -> clip_score  [actor pool of 1" in r.stdout
    assert not out.exists() and list(tmp_path.iterdir()) == []
    import yaml

    assert yaml.safe_load(r.stdout)["stages"][0]["download"]["threads"] == 3  # valid YAML: plan lines are comments


def test_plan_does_not_fuse_across_different_resources(tiny_ckpt):
    rec = load_recipe("image_text_clip", ["clip_score.num_gpus=0.5", "image_size.concurrency=2",
                                          f"clip_score.checkpoint={tiny_ckpt}"])
    ops = [op["stages"] for item in stage_plan(rec) if "operators" in item for op in item["operators"]]
    # a task map of another concurrency and a GPU actor each start their own operator
    assert ["load input part", "download"] in ops and ["image_size"] in ops
    assert ["clip_score"] in ops
    assert any("0.5 GPU" in line for line in plan_lines(stage_plan(rec)))


def test_stages_keeps_bracketed_text(cli_inprocess):
    r = cli_inprocess("stages", "clip_motion")
    assert r.returncode == 0 and "lies in [min_motion, max_motion]" in r.stdout


def test_stages_markdown_lists_every_stage(cli_inprocess):
    r = cli_inprocess("stages", "--markdown")
    assert r.returncode == 0
    from curate.stage_docs import shipped_steps

    for name, cls in shipped_steps().items():  # what tests register in this process is not shipped
        assert f"\n## `{name}`\n" in r.stdout
        for code in cls.reasons:
            assert f"| `{code}` |" in r.stdout
    assert "[min_motion, max_motion]" in r.stdout and "\x1b" not in r.stdout
    assert "| `min_words` | `int` | `2` |" in r.stdout
    from curate.stage_docs import render_markdown

    assert r.stdout == render_markdown()  # the same text as docs/stages.md


def test_csv_has_lf_line_endings(capsysbinary):
    from curate.cli import _emit

    _emit(["a", "b"], [[["x", 1], ["y,z", 2]]], "csv")  # one chunk of rows
    out = capsysbinary.readouterr().out
    assert out == b'a,b\nx,1\n"y,z",2\n'


def test_every_row_failed_exits_3(capsys):
    import pytest
    import typer

    from curate.cli import _exit_if_all_failed

    _exit_if_all_failed({"counts": {"rows": 4, "kept": 1, "failed": {"download/x": 3}}})  # not all: returns
    with pytest.raises(typer.Exit) as e:
        _exit_if_all_failed({"counts": {"rows": 4, "kept": 0, "dropped": {}, "failed": {"download/a": 3, "download/b": 1}}})
    assert e.value.exit_code == 3 and "every row failed" in capsys.readouterr().err


@pytest.mark.parametrize("top, hint", [
    ("download/download_http_404", "check the input URLs, the network and the recipe"),
    ("mllm_score/mllm_connection_error", "check the model server mllm_score asks (base_url, model"),
    ("recaption/recaption_timeout", "check the model server recaption asks (base_url, model"),
    ("load_image/input_missing_image", "check the input (its columns, format and images)"),
    ("my_stage/stage_error", "check my_stage's settings; each row's `error` column says what went wrong"),
])
def test_every_row_failed_says_where_to_look_by_stage(capsys, top, hint):
    # an endpoint that was down said "check the input URLs": nothing was wrong with them
    import typer

    from curate.cli import _exit_if_all_failed

    with pytest.raises(typer.Exit):
        _exit_if_all_failed({"counts": {"rows": 2, "kept": 0, "failed": {top: 2}}})
    assert hint in capsys.readouterr().err


def test_stage_counts_and_carry():
    before = pa.table({"status": ["ok", "ok", "ok", "dropped"], "stage": [None, None, None, "x"]})
    after = pa.table({"status": ["ok", "dropped", "failed", "dropped"], "stage": [None, "f", "f", "x"]})
    c = progress.stage_counts(before, after, "f", 0.5)
    assert c == {"rows": 4, "in": 3, "kept": 1, "dropped": 1, "failed": 1, "seconds": 0.5}
    t = progress.carry(after, {"7": {"f": c}})
    assert progress.carried(t.slice(1, 2)) == {"7": {"f": c}}
    assert progress.carried(before) == {}
    assert progress.merge(dict(c), c)["kept"] == 2


def test_plain_lines_every_interval():
    buf = io.StringIO()
    view = progress.ProgressView(Console(file=buf, width=200), every=0.0)
    assert not view.live
    with view:
        view.rows({"phase": "segment", "label": "download", "order": ["download"], "total": 100, "elapsed": 10.0,
                   "stages": {"download": {"rows": 40, "in": 40, "kept": 30, "dropped": 0, "failed": 10}}})
        view.rows({"phase": "job", "name": "exact_dedup", "elapsed": 3.0})
        view.parts("download", 1, 1)
    lines = buf.getvalue().splitlines()
    assert "download: 40/100 rows (40%), kept 30, dropped 0, failed 10, 4.0 rows/s, ETA 15s" in lines[0]
    assert "job exact_dedup: running for 3s" in lines[1] and "download: 1/1 parts" in lines[2]
    quiet = progress.ProgressView(Console(file=io.StringIO()), every=0.0, enabled=False)
    quiet.rows({"phase": "job", "name": "x", "elapsed": 1.0})
    assert quiet.console.file.getvalue() == ""


def test_terminal_view_draws_bars():
    buf = io.StringIO()
    view = progress.ProgressView(Console(file=buf, force_terminal=True, width=160), every=0.0)
    assert view.live
    with view:
        view.rows({"phase": "segment", "label": "download", "order": ["download"], "total": 100, "elapsed": 1.0,
                   "stages": {"download": {"rows": 50, "in": 50, "kept": 45, "dropped": 5, "failed": 0,
                                           "active_s": 5.0}}})
        view.parts("download", 1, 1)
    text = buf.getvalue()
    assert "download" in text and "50/100 rows (50%)" in text and "10.0 rows/s" in text and "1/1 parts" in text


def test_funnel_names_derived_rows_by_what_they_are_not_as_clips():
    """Rows any stage derives (video clips, a custom stage's splits) are counted apart from input rows; the
    label says what they are (rows with a parent_uid), not "clips", which a custom stage's rows are not."""
    from rich.console import Console

    from curate.cli import print_funnel
    from curate.io.manifest import Counts

    manifest = type("M", (), {"name": "run", "counts": Counts(rows=13, kept=12, failed={"split/bad": 1}, derived=10)})
    console = Console(record=True, width=120)
    print_funnel(manifest, console)
    text = console.export_text()
    assert "parent_uid" in text and "clips" not in text
    cells = [line.replace("│", " ").split() for line in text.splitlines()]
    lines = {c[0]: c for c in cells if c}
    assert lines["input"][1] == "3" and lines["derived"][-2:] == ["10", "333.3"]
