"""A --retry-failed that stops before finishing (a model that no longer loads, a full disk, a crash while its
parts move into place) never makes the finished run look unfinished: readers keep seeing the complete run,
`--retry-failed OUT --abandon` puts it back exactly, and `--resume` finishes the retry. In-process runs (no
Ray): a text filter (tests/e2e/retry_plugin.py) fails its "flaky" rows until `fixed: true`."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

STAGE = "tests.e2e.retry_plugin:Flaky"
ROWS = 30


def _recipe(tmp: Path, name: str, **flaky) -> str:
    path = tmp / f"{name}.yaml"
    settings = ", ".join(f"{k}: {json.dumps(v)}" for k, v in flaky.items())
    path.write_text(f"name: t\ninput: {{format: parquet}}\noutput: {{samples_per_shard: 4}}\n"
                    f"stages:\n  - {STAGE}: {{{settings}}}\n  - exact_dedup: {{by: text}}\n")
    return str(path)


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of the run but the lock (which holds the last writer's pid)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".curate.lock"}


@pytest.fixture
def finished(tmp_path, monkeypatch, cli_inprocess):
    """A complete run of 30 rows with 6 failed rows (2 of them in one part with kept rows)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    texts = [f"caption {i} " + ("flaky" if i % 5 == 0 else "drop" if i % 7 == 0 else "fine") for i in range(ROWS)]
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(ROWS)], "caption": texts}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    res = cli_inprocess("run", _recipe(tmp_path, "first"), "-i", str(tmp_path / "in.parquet"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["counts"]["failed"] == {"flaky/stage_error": 6}
    return out


def _status(out: Path) -> tuple[str, list]:
    m = json.loads((out / "manifest.json").read_text())
    return m["status"], [(b["kind"], b["status"]) for b in m["batches"]]


def _seen_complete(cli_inprocess, out: Path, kept: int) -> None:
    """validate, inspect and the query catalog see a complete run of every input row once."""
    res = cli_inprocess("validate", str(out))
    assert res.returncode == 0 and f"ok: {ROWS} rows, {kept} kept" in res.stdout, res.stdout + res.stderr
    res = cli_inprocess("inspect", str(out), "--where", "status = 'failed'", "-n", "100", "-f", "json")
    assert res.returncode == 0 and len(json.loads(res.stdout)) == ROWS - 4 - kept


def test_failed_retry_leaves_run_complete_then_abandon_restores_it_exactly(finished, tmp_path, cli_inprocess):
    before = _snapshot(finished)
    res = cli_inprocess("run", _recipe(tmp_path, "broken", fixed=True, broken=True), "--retry-failed", str(finished))
    assert res.returncode == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "cannot load weights" in err and "still complete" in err
    assert f"curate run --retry-failed {finished} --abandon" in err and f"curate run --resume -o {finished}" in err
    assert _status(finished) == ("complete", [("run", "complete"), ("retry-failed", "running")])
    _seen_complete(cli_inprocess, finished, kept=20)
    # a second retry is refused until this one is finished or dropped
    res = cli_inprocess("run", "--retry-failed", str(finished))
    assert res.returncode == 2 and "unfinished retry" in res.stderr and "--abandon" in res.stderr

    res = cli_inprocess("run", "--retry-failed", str(finished), "--abandon")
    assert res.returncode == 0 and "as it was before" in res.stdout, res.stderr
    assert _snapshot(finished) == before  # manifest, shards, meta rows: byte for byte; no _work left
    res = cli_inprocess("run", "--retry-failed", str(finished), "--abandon")
    assert res.returncode == 2 and "no unfinished retry" in res.stderr
    # the run retries as if nothing had happened
    res = cli_inprocess("run", _recipe(tmp_path, "fixed", fixed=True), "--retry-failed", str(finished))
    assert res.returncode == 0, res.stderr
    _seen_complete(cli_inprocess, finished, kept=26)


def test_resume_finishes_a_failed_retry(finished, tmp_path, cli_inprocess):
    res = cli_inprocess("run", _recipe(tmp_path, "broken", fixed=True, broken=True), "--retry-failed", str(finished))
    assert res.returncode == 2
    # without a recipe, --resume finishes the retry with the recipe it started with (still broken)
    res = cli_inprocess("run", "--resume", "-o", str(finished))
    assert res.returncode == 2 and "cannot load weights" in res.stderr and "still complete" in res.stderr
    # a setting of a stage none of the retry's rows reached may change (a model path fixed), as for any resume
    res = cli_inprocess("run", _recipe(tmp_path, "fixed", fixed=True), "--resume", "-o", str(finished))
    assert res.returncode == 0, res.stderr
    assert _status(finished) == ("complete", [("run", "complete"), ("retry-failed", "complete")])
    assert not (finished / "_work").exists()
    _seen_complete(cli_inprocess, finished, kept=26)
    m = json.loads((finished / "manifest.json").read_text())
    assert m["counts"]["rows"] == ROWS and m["batches"][1]["recipe"]["stages"][0][STAGE]["broken"] is False


def test_retry_stopped_midway_is_staged_not_visible(finished, tmp_path, cli_inprocess, monkeypatch):
    """A full disk on the retry's second part: its first part stays staged, the run's shards and meta/ are
    untouched, and --resume commits both."""
    from curate import runner

    real, calls = runner.write_part, []

    def full_disk_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    before = _snapshot(finished)
    with monkeypatch.context() as m:
        m.setattr(runner, "write_part", full_disk_on_second)
        res = cli_inprocess("run", _recipe(tmp_path, "fixed", fixed=True), "--retry-failed", str(finished))
    assert res.returncode != 0
    assert _status(finished)[0] == "complete"
    staged = sorted(p.name for p in (finished / "_work" / "retry" / "meta").glob("*.parquet"))
    assert staged == ["part-000008.parquet"]  # the retry's first part, out of the readers' sight
    unchanged = {k: v for k, v in before.items() if k != "manifest.json"}  # (the manifest names the pending retry)
    assert {k: v for k, v in _snapshot(finished).items() if not k.startswith("_work") and k != "manifest.json"} == unchanged
    _seen_complete(cli_inprocess, finished, kept=20)
    res = cli_inprocess("run", "--resume", "-o", str(finished))
    assert res.returncode == 0, res.stderr
    _seen_complete(cli_inprocess, finished, kept=26)


def test_crash_while_moving_parts_in_place_resumes(finished, tmp_path, cli_inprocess, monkeypatch):
    """Once the retry moves its parts into place the run is honestly `running` (abandon is refused: the old
    failed rows are being replaced); --resume finishes the move and every row is in meta/ once."""
    from curate.io import storage

    real, calls = storage.move, []

    def die_on_third(src, dst):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(storage, "move", die_on_third)
        res = cli_inprocess("run", _recipe(tmp_path, "fixed", fixed=True), "--retry-failed", str(finished))
    assert res.returncode != 0
    assert _status(finished) == ("running", [("run", "complete"), ("retry-failed", "committing")])
    res = cli_inprocess("run", "--retry-failed", str(finished), "--abandon")
    assert res.returncode == 2 and "--resume" in res.stderr
    res = cli_inprocess("run", "--resume", "-o", str(finished))
    assert res.returncode == 0, res.stderr
    _seen_complete(cli_inprocess, finished, kept=26)


def test_refilter_of_a_run_with_a_stopped_retry_leaves_the_retry_out(finished, tmp_path, cli_inprocess):
    """OUT2 is the run its readers see: before, it carried OUT's unfinished retry over as a finished
    `retry-failed` batch whose parts (8, 9) OUT2 does not hold."""
    res = cli_inprocess("run", _recipe(tmp_path, "broken", fixed=True, broken=True), "--retry-failed", str(finished))
    assert res.returncode == 2
    out2 = tmp_path / "out2"
    res = cli_inprocess("refilter", str(finished), "--where", "true", "-o", str(out2))
    assert res.returncode == 0, res.stderr
    assert _status(out2) == ("complete", [("run", "complete")])
    m = json.loads((out2 / "manifest.json").read_text())
    assert sorted(int(k) for k in m["parts"]) == list(range(8)) == [int(p.stem[5:]) for p in sorted((out2 / "meta").glob("*"))]
    _seen_complete(cli_inprocess, out2, kept=20)
    # OUT2's own retry numbers its parts after OUT2's, and the source's retry is still there to finish
    res = cli_inprocess("run", _recipe(tmp_path, "fixed", fixed=True), "--retry-failed", str(out2))
    assert res.returncode == 0, res.stderr
    _seen_complete(cli_inprocess, out2, kept=26)
    assert _status(finished) == ("complete", [("run", "complete"), ("retry-failed", "running")])


def test_resume_after_an_abandon_cut_short_says_to_finish_the_abandon(finished, tmp_path, cli_inprocess):
    """--abandon removes the retry's files before it restores the manifest; cut short there, a --resume (which
    the stop hint offers) read the removed input parts and died with a FileNotFoundError traceback."""
    before = _snapshot(finished)
    res = cli_inprocess("run", _recipe(tmp_path, "broken", fixed=True, broken=True), "--retry-failed", str(finished))
    assert res.returncode == 2
    for part in (finished / "_work" / "input").glob("part-*.parquet"):  # where an abandon cut short stops
        part.unlink()
    res = cli_inprocess("run", _recipe(tmp_path, "fixed", fixed=True), "--resume", "-o", str(finished))
    err = res.stderr.strip()
    assert res.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "being dropped" in err and f"curate run --retry-failed {finished} --abandon" in err
    res = cli_inprocess("run", "--retry-failed", str(finished), "--abandon")
    assert res.returncode == 0, res.stderr
    assert _snapshot(finished) == before


def test_a_retry_whose_clip_weights_cannot_be_had_stops_before_writing(finished, tmp_path, cli_inprocess):
    """The weights preflight of a run covers a retry too (it wrote its input parts, then failed in a worker)."""
    before = _snapshot(finished)
    recipe = tmp_path / "clip.yaml"
    recipe.write_text(f"name: t\ninput: {{format: parquet}}\noutput: {{samples_per_shard: 4}}\nstages:\n"
                      f"  - {STAGE}: {{fixed: true}}\n  - download: {{}}\n"
                      "  - clip_score: {model: ViT-B-32, pretrained: laion2b_s34b_b79k}\n")
    res = cli_inprocess("run", str(recipe), "--retry-failed", str(finished))  # HF_HUB_OFFLINE: not cached
    assert res.returncode == 2 and "not in the local Hugging Face cache" in res.stderr, res.stderr
    assert _snapshot(finished) == before


def test_leftovers_of_a_retry_that_died_before_saving_its_batch_are_not_taken_for_kept_work(finished, tmp_path,
                                                                                           cli_inprocess):
    """A retry that died after writing its input parts but before saving its batch leaves _work behind; the
    next retry took that for a keep_work run's folder, so its abandon kept the leftovers (and its commit
    would have deleted them as if they were the run's)."""
    before = _snapshot(finished)
    stray = finished / "_work" / "input" / "part-000099.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by a retry that died")
    res = cli_inprocess("run", _recipe(tmp_path, "broken", fixed=True, broken=True), "--retry-failed", str(finished))
    assert res.returncode == 2
    res = cli_inprocess("run", "--retry-failed", str(finished), "--abandon")
    assert res.returncode == 0, res.stderr
    assert _snapshot(finished) == before and not (finished / "_work").exists()


def test_the_stop_line_offers_abandon_only_while_it_can_drop_the_retry(finished, tmp_path, cli_inprocess,
                                                                        monkeypatch, capsys):
    """Ctrl-C's line offered --abandon for any stopped --retry-failed command, also in the window where the
    parts move into place (abandon refuses then), and never for a stopped --resume of a retry."""
    import sys

    from curate import cli

    res = cli_inprocess("run", _recipe(tmp_path, "broken", fixed=True, broken=True), "--retry-failed", str(finished))
    assert res.returncode == 2

    def stop_line(*argv):
        monkeypatch.setattr(sys, "argv", ["curate", *argv])
        cli._stop_line()
        return capsys.readouterr().err

    assert "--abandon" in stop_line("run", "--resume", "-o", str(finished))
    manifest = json.loads((finished / "manifest.json").read_text())
    manifest["batches"][-1]["status"] = "committing"
    (finished / "manifest.json").write_text(json.dumps(manifest))
    line = stop_line("run", "--retry-failed", str(finished))
    assert f"curate run --resume -o {finished}" in line and "--abandon" not in line


def test_readers_of_a_run_with_a_stopped_retry_see_it_whole(finished, tmp_path, cli_inprocess, caplog):
    """The stopped retry's parts are listed in manifest.json but staged in _work/retry/, not in meta/: the
    parts check (RunDir.parts_problems, on the settled manifest) leaves them out. reshard's own copy of
    the check counted them missing and refused the run ('lacks 2 meta part(s)')."""
    res = cli_inprocess("run", _recipe(tmp_path, "broken", fixed=True, broken=True), "--retry-failed", str(finished))
    assert res.returncode == 2
    caplog.clear()
    res = cli_inprocess("query", str(finished), "SELECT count(*) AS n FROM samples", "-f", "csv")
    assert (res.returncode, res.stdout) == (0, f"n\n{ROWS}\n") and not caplog.records  # no parts warning
    res = cli_inprocess("export", str(finished), "--format", "uids", "-o", str(tmp_path / "u.npy"))
    assert res.returncode == 0 and "uids: 20" in res.stdout, res.stderr
    res = cli_inprocess("reshard", str(finished), "--samples-per-shard", "7", "-o", str(tmp_path / "r"))
    assert res.returncode == 0 and "20 kept samples in 3 shards" in res.stdout, res.stderr
