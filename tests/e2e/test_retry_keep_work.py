"""--retry-failed of a run that kept its _work (output.keep_work: true) and has a job step (exact_dedup): the
retry runs the job on its own rows (against the rows the run already kept, as without keep_work), instead of
taking the first batch's done marker for its own and failing on decisions that were never written; the kept
_work of the first batch stays as it was. In-process runs (no Ray): tests/e2e/retry_plugin.py fails the rows
whose caption says "flaky" until `fixed: true`."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

STAGE = "tests.e2e.retry_plugin:Flaky"


def _recipe(tmp: Path, name: str, keep_work: bool, **flaky) -> str:
    path = tmp / f"{name}-{keep_work}.yaml"
    settings = ", ".join(f"{k}: {json.dumps(v)}" for k, v in flaky.items())
    path.write_text(f"name: t\ninput: {{format: parquet}}\noutput: {{samples_per_shard: 4, keep_work: {json.dumps(keep_work)}}}\n"
                    f"stages:\n  - {STAGE}: {{{settings}}}\n  - exact_dedup: {{by: text}}\n")
    return str(path)


def _input(tmp: Path) -> Path:
    """30 rows, 9 of them failing until fixed: 6 unique, one the copy of a row the first batch keeps ("twin",
    the dedup lowercases), two copies of each other ("pair"), so the retry's dedup has work of both kinds."""
    texts = [f"caption {i} " + ("flaky" if i % 5 == 0 else "drop" if i % 7 == 0 else "fine") for i in range(26)]
    texts[3] = "twin FLAKY"  # kept by the first batch
    texts += ["twin flaky", "pair flaky", "pair flaky", "fine again"]
    path = tmp / "in.parquet"
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(len(texts))], "caption": texts}), path)
    return path


def _work(out: Path) -> dict[str, bytes]:
    """The kept _work but its crash markers (cleared whenever a session starts) and the retry's staging."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "_work").rglob("*"))
            if p.is_file() and not {"crashes", "retry"} & set(p.relative_to(out / "_work").parts)}


def _members(tar: Path) -> list[tuple[str, bytes]]:
    """A shard's members in order, byte for byte (two runs' tar headers differ in their write times)."""
    with tarfile.open(tar) as t:
        return [(m.name, t.extractfile(m).read()) for m in t]


def _data(out: Path) -> dict:
    """What a reader of the run sees: every shard's members, every meta row, sizes and the funnel."""
    m = json.loads((out / "manifest.json").read_text())
    meta = {p.name: pq.read_table(p).to_pylist() for p in sorted((out / "meta").glob("*.parquet"))}
    return {"shards": {p.name: _members(p) for p in sorted((out / "shards").glob("*.tar"))}, "meta": meta,
            "sizes": (out / "sizes.json").read_text(), "counts": m["counts"], "status": m["status"],
            "batches": [(b["kind"], b["status"]) for b in m["batches"]]}


@pytest.fixture
def runs(tmp_path, monkeypatch, cli_inprocess):
    """The same finished run twice: with and without output.keep_work."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    src = _input(tmp_path)
    outs = {}
    for keep in (True, False):
        out = outs[keep] = tmp_path / f"out-{keep}"
        res = cli_inprocess("run", _recipe(tmp_path, "first", keep), "-i", str(src), "-o", str(out))
        assert res.returncode == 0, res.stderr
        assert json.loads((out / "manifest.json").read_text())["counts"]["failed"] == {"flaky/stage_error": 9}
    assert (outs[True] / "_work" / "job0" / "_SUCCESS").exists() and not (outs[False] / "_work").exists()
    return outs


def test_retry_under_keep_work_runs_its_job_as_without(runs, tmp_path, cli_inprocess):
    kept_work = _work(runs[True])
    for keep, out in runs.items():
        res = cli_inprocess("run", _recipe(tmp_path, "fixed", keep, fixed=True), "--retry-failed", str(out))
        assert res.returncode == 0, res.stderr
    data = _data(runs[True])
    assert data == _data(runs[False])
    # the retry's dedup ran on its rows: against the row the run kept, and between the two retried copies
    assert data["counts"]["dropped"] == {"flaky/says_drop": 3, "exact_dedup/duplicate_text": 2}
    assert data["counts"]["kept"] == 25 and data["counts"]["failed"] == {}
    res = cli_inprocess("validate", str(runs[True]))
    assert res.returncode == 0 and "ok: 30 rows, 25 kept" in res.stdout, res.stdout + res.stderr
    # the first batch's kept work is as it was (the retry adds its own parts next to it)
    after = _work(runs[True])
    assert {k: after[k] for k in kept_work} == kept_work
    assert "_work/job0/part-000008.parquet" in after and not (runs[True] / "_work" / "retry").exists()


def test_stopped_retry_under_keep_work_resumes_or_abandons(runs, tmp_path, cli_inprocess, monkeypatch):
    """A full disk on the retry's second part (after its job ran): --abandon leaves the kept _work as it
    was and a new retry runs its job again; stopped again, --resume finishes it without re-running the job."""
    from curate import runner

    out = runs[True]
    kept_work = _work(out)
    real_write, real_job = runner.write_part, runner.Runner._job_local
    writes, jobs = [], []

    def full_disk_on_second(*args, **kwargs):
        writes.append(1)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kwargs)

    def counted(self, *args, **kwargs):
        jobs.append(1)
        return real_job(self, *args, **kwargs)

    monkeypatch.setattr(runner.Runner, "_job_local", counted)
    fixed = _recipe(tmp_path, "fixed", True, fixed=True)
    for attempt in (1, 2):
        writes.clear()
        with monkeypatch.context() as m:
            m.setattr(runner, "write_part", full_disk_on_second)
            res = cli_inprocess("run", fixed, "--retry-failed", str(out))
        assert res.returncode != 0 and len(jobs) == attempt  # each retry runs its own job
        if attempt == 1:
            res = cli_inprocess("run", "--retry-failed", str(out), "--abandon")
            assert res.returncode == 0, res.stderr
            assert _work(out) == kept_work and not (out / "_work" / "retry").exists()
    res = cli_inprocess("run", "--resume", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert len(jobs) == 2  # the retry's decisions were done: only its unwritten part was left
    res = cli_inprocess("run", _recipe(tmp_path, "fixed", False, fixed=True), "--retry-failed", str(runs[False]))
    assert res.returncode == 0, res.stderr
    assert _data(out) == _data(runs[False])
    after = _work(out)
    assert {k: after[k] for k in kept_work} == kept_work
