"""Faults: SIGKILL mid-run then --resume, --retry-failed, and bad input that must fail cleanly."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pyarrow as pa
import pytest
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curate.validate import validate


def meta(out):
    return pads.dataset(str(out / "meta"), format="parquet").to_table().to_pylist()


RUN_ARGS = ["--set", "output.samples_per_shard=12", "--set", "download.threads=2"]


def _run_until_parts(urls, out, ray_address, parts: int) -> subprocess.Popen:
    """`curate run` (the console script, a subprocess) on the demo URLs, returned once `parts` parts have
    passed the first segment: small parts and few threads, so it is still running then."""
    args = ["run", "image_text", "--input", str(urls), "--output", str(out), *RUN_ARGS]
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "RAY_ADDRESS": ray_address})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and len(list((out / "_work" / "segment0").glob("part-*.parquet"))) >= parts:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "run finished before it could be stopped: " + proc.stderr.read().decode()[-2000:]
    return proc


def test_sigkill_then_resume_has_every_row_once(ray_address, demo_urls, tmp_path, cli_inprocess):
    """The killed run is a console-script subprocess; the resumes run in-process (curate.cli.main, same error
    handling) on the session's Ray, which spares an interpreter start per command."""
    out = tmp_path / "out"
    proc = _run_until_parts(demo_urls, out, ray_address, 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists() or '"complete"' not in (out / "manifest.json").read_text()
    for tar in out.glob("shards/*.tar"):  # whatever is under a final name is complete
        with tarfile.open(tar) as tf:
            tf.getmembers()
    time.sleep(1)  # let Ray reap the dead driver's workers

    res = cli_inprocess("run", "image_text", "--input", str(demo_urls), "--output", str(out), "--resume", *RUN_ARGS)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = meta(out)
    assert len(rows) == 300 and len({r["uid"] for r in rows}) == 300
    problems, stats = validate(out)
    assert problems == []
    assert stats["members"] == 3 * stats["kept"]
    assert not list(out.rglob(".*.tmp-*")) and not (out / "_work").exists()

    # the recipe must match on resume; a finished run resumes to a no-op
    res = cli_inprocess("run", "image_text", "--input", str(demo_urls), "--output", str(out), "--resume")
    assert res.returncode == 2 and "recipe differs" in res.stderr


@pytest.mark.parametrize("sig,rc,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_sigterm_says_how_to_resume_and_resume_finishes(ray_address, demo_urls, tmp_path, cli_inprocess,
                                                                 sig, rc, word):
    """Ctrl-C and a scheduler's SIGTERM stop a run with one line that says how to finish it, and the exit code
    says which (130, 143). Before: Ctrl-C exited 130 silently (click turned it into Abort), and SIGTERM hit
    Ray's C++ failure handler: a stack dump and death by signal."""
    out = tmp_path / "out"
    proc = _run_until_parts(demo_urls, out, ray_address, 2)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == rc, err[-2000:]
    assert err.strip().splitlines()[-1] == f"{word}; finish it with: curate run --resume -o {out}"
    assert "Traceback" not in err and "SIGTERM received" not in err
    res = cli_inprocess("run", "--resume", "-o", str(out))  # as the line says: the saved recipe and --set values
    assert res.returncode == 0, res.stdout + res.stderr
    rows = meta(out)
    assert len(rows) == 300 and len({r["uid"] for r in rows}) == 300
    assert validate(out)[0] == []


# Loaded by the `curate run` below (PYTHONPATH): a Ctrl-C that arrives while the process forks (Ray starting its
# processes) once curate's stop handler is in place, handled at the start of logging's at-fork _releaseLock, as
# a real one that lands there is. Blocked and sent to this thread in the before-fork hook, unblocked through
# libc in the after-fork hook (no Python frame: signal.pthread_sigmask would handle it itself, here).
CTRL_C_IN_A_FORK = """
import ctypes, functools, os, signal, threading

_sent = []


def _before_fork():
    if not _sent and getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "_on_stop_signal":
        _sent.append(1)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)


_mask = (ctypes.c_ulong * 16)()
_mask[0] = 1 << (signal.SIGINT - 1)
_unblock = functools.partial(ctypes.CDLL(None).pthread_sigmask, 1, ctypes.byref(_mask), None)  # 1: SIG_UNBLOCK
os.register_at_fork(before=_before_fork, after_in_parent=_unblock, after_in_child=_unblock)
"""


def test_a_ctrl_c_inside_a_fork_still_stops_the_run(demo_urls, tmp_path):
    """A Ctrl-C handled inside logging's at-fork hook raises where Python cannot pass it on: it was printed as
    'Exception ignored in: <function _releaseLock>' and lost, with logging's lock still held, so the run hung
    at its next log call until a second Ctrl-C (or the 20 s watchdog). Now the lock is released and the stop
    delivered again: one line, exit 130, at once. The run starts its own local Ray, whose start forks."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CTRL_C_IN_A_FORK)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "run", "image_text", "--input", str(demo_urls),
                           "--output", str(out), *RUN_ARGS], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [f"interrupted; finish it with: curate run --resume -o {out}"], proc.stderr
    assert time.time() - started < 60


def test_retry_failed_reruns_only_failed_rows(ray_address, demo_corpus, tmp_path, cli_inprocess):
    """Runs in-process through the console entry point (curate.cli.main) on the session's Ray."""
    from curate.demo.corpus import write_url_list
    from curate.demo.server import DemoServer

    out = tmp_path / "out"
    server = DemoServer(demo_corpus).start()  # fresh server: its flaky paths have not been asked yet
    demo_urls = write_url_list(demo_corpus, server.url, tmp_path / "urls.parquet")
    res = cli_inprocess("run", "image_text", "--input", str(demo_urls), "--output", str(out),
                        "--set", "output.samples_per_shard=100")
    assert res.returncode == 0, res.stderr
    before = {r["uid"]: r for r in meta(out)}
    truth = {r["id"]: r["noise"] for r in pq.read_table(demo_corpus / "corpus.parquet").to_pylist()}
    flaky = [u for u, r in before.items() if truth[r["id"]] == "flaky"]
    assert flaky and all(before[u]["reason"] == "download_http_500" for u in flaky)
    n_failed = sum(r["status"] == "failed" for r in before.values())
    kept_before = {u for u, r in before.items() if r["status"] == "ok"}

    # retries=1 gets past the flaky server; dedup runs as a distributed Ray job against kept samples
    res = cli_inprocess("run", "image_text", "--retry-failed", str(out), "--set", "download.retries=1",
                        "--set", "output.samples_per_shard=100", "--set", "ray.job_local_max_rows=0")
    assert res.returncode == 0, res.stdout + res.stderr
    after = {r["uid"]: r for r in meta(out)}
    assert set(after) == set(before)
    assert all(after[u]["status"] == "ok" for u in flaky)
    assert {u for u, r in after.items() if r["status"] == "ok"} >= kept_before
    assert sum(r["status"] == "failed" for r in after.values()) == n_failed - len(flaky)
    assert all(after[u]["part"] >= 3 for u, r in before.items() if r["status"] == "failed")
    problems, _ = validate(out)
    assert problems == []
    # a second retry finds only permanent failures and leaves kept samples alone
    res = cli_inprocess("run", "image_text", "--retry-failed", str(out), "--set", "output.samples_per_shard=100")
    assert res.returncode == 0
    final = meta(out)
    assert len(final) == 300 and validate(out)[0] == []
    assert {r["uid"] for r in final if r["status"] == "ok"} == {u for u, r in after.items() if r["status"] == "ok"}
    server.stop()


def one_line_error(res):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path, cli, cli_inprocess):
    out = tmp_path / "out"
    good = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "caption": ["a red circle"]}), good)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"url": pa.array([], pa.string()), "caption": pa.array([], pa.string())}), empty)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nstages: [download: {\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: x\nstages:\n  - download: {}\n  - sharpen: {}\n")
    field = tmp_path / "field.yaml"
    field.write_text("name: x\nstages:\n  - download: {timeout: 3}\n")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    cases = [
        (["run", "image_text", "--input", str(tmp_path / "missing.parquet"), "--output", str(out)], "input not found"),
        (["run", str(bad_yaml), "--input", str(good), "--output", str(out)], "not valid YAML"),
        (["run", str(tmp_path / "nope.yaml"), "--input", str(good), "--output", str(out)], "no recipe file"),
        (["run", str(unknown), "--input", str(good), "--output", str(out)], "unknown stage 'sharpen'"),
        (["run", str(field), "--input", str(good), "--output", str(out)], "download.timeout: unknown field"),
        (["run", "image_text", "--input", str(good), "--output", str(out), "--set", "input.url_col=link"], "no column 'link'"),
        (["run", "image_text", "--input", str(empty), "--output", str(out)], "has no rows"),
        (["run", "image_text", "--input", str(garbage), "--output", str(out)], "cannot read"),
        (["run", "image_text", "--input", str(good), "--output", str(out), "--resume"], "nothing to resume"),
        (["run", "image_text", "--input", str(good)], "no output folder"),
        (["query", str(tmp_path), "SELECT 1"], "no metadata parts"),
        (["validate", str(tmp_path / "nowhere")], "is not a curate run directory"),
        (["run", "image_text", "--input", str(good), "--output", str(good)], "is a file, not a folder"),
        (["run", "image_text", "--input", str(good), "--output", str(good / "sub")], "which is a file, not a folder"),
        (["run", "--output", str(out)], "missing RECIPE"),
        (["run", "--resume"], "needs --output"),
        (["run", "--resume", "--output", str(out)], "nothing to resume"),
    ]
    # the console script itself, once, then the same entry point in-process for the rest
    line = one_line_error(cli(*cases[0][0]))
    assert cases[0][1] in line
    for args, message in cases:
        res = cli_inprocess(*args)
        line = one_line_error(res)
        assert res.returncode == 2, (args, res.returncode)  # the user's error, not a bug (1)
        assert message in line, (args, line)
        assert not out.exists(), args
    # an output folder with unrelated content is refused, and left as it was (a desktop's .DS_Store is not content)
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert cli_inprocess("run", "image_text", "--input", str(good), "--output", str(out)).returncode == 3  # ran
    shutil.rmtree(out)
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    line = one_line_error(cli_inprocess("run", "image_text", "--input", str(good), "--output", str(out)))
    assert "not empty" in line and (out / "precious.txt").read_text() == "keep me"


def test_ray_auth_failure_names_the_fix():
    """`ray start` clusters use token auth by default (Ray >= 2.5x); ray.init only says 'Failed to connect',
    with the AuthenticationError as its cause. The runner's one-line error must name the fix instead."""
    from ray.exceptions import AuthenticationError

    from curate.runner import _ray_error_line

    try:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
        except AuthenticationError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as err:
        line = _ray_error_line(err)
    assert "RAY_AUTH_MODE=token" in line and "\n" not in line
    assert _ray_error_line(ConnectionError("Could not find any running Ray instance.\nmore")) == \
        "Could not find any running Ray instance."


def test_a_second_writer_is_refused_and_leaves_the_first_ones_folder_alone(tmp_path, cli_inprocess):
    """One process writes a run directory at a time (RunDir.writer_lock, flock): a --resume or a fresh run
    on a folder another process holds gets one line and exit 2, and the folder is left as it was. Before,
    both wrote the same parts and the second died with FileNotFoundError."""
    from curate.io.rundir import RunDir

    good = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"] * 3, "caption": ["a", "b", "c"]}), good)
    out = tmp_path / "out"
    run = ["run", "image_text", "--input", str(good), "--output", str(out)]
    assert cli_inprocess(*run).returncode == 3  # every row failed (nothing listens on port 9): a finished run
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with RunDir(out).writer_lock():  # as if another curate process were writing it (this pid)
        line = one_line_error(res := cli_inprocess(*run, "--resume"))
        assert res.returncode == 2 and f"being written by another curate process (pid {os.getpid()})" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert cli_inprocess(*run, "--resume").returncode == 3  # free again: the finished run resumes to a no-op

    fresh = tmp_path / "fresh"  # another process created the folder and holds it, but has no manifest yet
    fresh.mkdir()
    with RunDir(fresh).writer_lock():
        line = one_line_error(res := cli_inprocess("run", "image_text", "--input", str(good), "--output", str(fresh)))
        assert res.returncode == 2 and "another curate process" in line
        assert [p.name for p in fresh.iterdir()] == [".curate.lock"]  # theirs: not cleaned up by the refused run


def test_clusters_on_a_run_without_dedup_says_so(tmp_path, cli_inprocess):
    """A run whose recipe has no dedup stage: one line, not DuckDB's Binder Error on dup_of."""
    good = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "caption": ["a"]}), good)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: no-dedup\nstages:\n  - download: {timeout_s: 1}\n")
    out = tmp_path / "out"
    assert cli_inprocess("run", str(recipe), "-i", str(good), "-o", str(out)).returncode == 3
    res = cli_inprocess("clusters", str(out))
    assert res.returncode == 2 and "ran no dedup stage" in one_line_error(res)
    res = cli_inprocess("clusters", str(out), "--column", "dup_of")
    assert res.returncode == 2 and "it has no dedup column" in one_line_error(res)
