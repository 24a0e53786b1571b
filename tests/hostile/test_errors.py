"""Errors users can act on: a full disk, a read-only or immutable output, Ray not reachable each end as one
line naming the cause and the fix, exit 2 (1 only for bugs), and a run that fails before its first part
leaves nothing behind.

Real file systems where the machine allows it: a 1 MiB tmpfs for disk full, a read-only bind mount, an
immutable (chattr +i) folder for "not permitted" (chmod does not stop root). They need root and mount
rights and are skipped without them.
"""
from __future__ import annotations

import errno
import os
import random
import socket
import string
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.environment_errors import describe
from tests.conftest import curate_cli, curate_inprocess

RECIPE = "name: text_only\nstages:\n  - caption_text: {min_words: 1}\n"


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounted(tmp_path):
    """mounted(kind) -> a folder on a real small/read-only file system, unmounted after the test."""
    points = []

    def make(kind: str) -> Path:
        point = tmp_path / f"mnt{len(points)}"
        point.mkdir()
        ok = (_mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)]) if kind == "tiny" else
              _mount(["--bind", "-o", "ro", str(point), str(point)]))
        if not ok:
            pytest.skip(f"cannot mount a {kind} file system here (needs root and mount rights)")
        points.append(point)
        return point

    yield make
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _urls(tmp_path: Path, rows: int, chars: int) -> Path:
    rng = random.Random(0)
    text = [" ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(chars // 8)) for _ in range(rows)]
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": [f"http://127.0.0.1:9/{i}.jpg" for i in range(rows)], "caption": text}), path)
    return path


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def _one_line(proc) -> str:
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_disk_full_is_one_line_exit_2_and_leaves_nothing(tmp_path, mounted, capsys, ray_address):
    """The input parts fit on the 1 MiB disk, the first part's tar does not: ENOSPC inside a Ray worker,
    wrapped by Ray Data, still ends as one line, and the run that committed nothing is removed."""
    tiny = mounted("tiny")
    out = tiny / "out"
    proc = curate_inprocess("run", _recipe(tmp_path), "-i", _urls(tmp_path, 2_500, 200), "-o", out, capsys=capsys)
    assert proc.returncode == 2, proc.stderr
    assert "no space left on the device" in _one_line(proc) and "--output" in proc.stderr
    assert list(tiny.iterdir()) == [], f"left {[p.name for p in tiny.rglob('*')]}"


def test_read_only_output_is_one_line_exit_2(tmp_path, mounted, capsys):
    ro = mounted("read-only")
    proc = curate_inprocess("run", _recipe(tmp_path), "-i", _urls(tmp_path, 10, 40), "-o", ro / "out", capsys=capsys)
    assert proc.returncode == 2
    assert "read-only file system" in _one_line(proc) and str(ro / "out") in proc.stderr
    assert list(ro.iterdir()) == []


def test_immutable_output_folder_is_one_line_exit_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        proc = curate_inprocess("run", _recipe(tmp_path), "-i", _urls(tmp_path, 10, 40), "-o", locked / "out",
                                capsys=capsys)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
    assert proc.returncode == 2
    assert "not permitted" in _one_line(proc)
    assert list(locked.iterdir()) == []


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


def test_unreachable_ray_fails_fast_in_one_line_and_leaves_nothing(tmp_path):
    """A subprocess: this test session's own Ray would otherwise be reused."""
    out = tmp_path / "out"
    env = {"RAY_ADDRESS": f"127.0.0.1:{_dead_port()}"}
    proc = curate_cli("run", str(_recipe(tmp_path)), "-i", str(_urls(tmp_path, 10, 40)), "-o", str(out), env=env,
                      timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert "cannot reach Ray" in line and "RAY_ADDRESS" in line
    assert not out.exists()  # no manifest.json, no recipe.yaml, no empty folder


@pytest.mark.parametrize("args", [
    ["run"],  # missing argument
    ["query"],
    ["run", "image_text", "--no-such-option"],
    ["nosuchcommand"],
    ["query", "/nonexistent/run", "SELECT 1"],
    ["run", "no_such_recipe", "-i", "x", "-o", "y"],
    ["run", "image_text", "--set", "download.timeout_s=inf", "-i", "x", "-o", "y"],
    ["inspect", "/nonexistent/run", "--uid", "a", "--where", "true"],
])
def test_user_errors_exit_2_everywhere(args, capsys):
    assert curate_inprocess(*args, capsys=capsys).returncode == 2


def test_a_bug_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    """A stand-in bug (the catalog query raising ZeroDivisionError, patched in): exit 1, not a traceback."""
    import curate.catalog

    def broken(*a, **k):
        return 1 / 0

    monkeypatch.setattr(curate.catalog, "stream_each", broken)  # what `curate query` calls
    proc = curate_inprocess("query", tmp_path, "SELECT 1", capsys=capsys)
    assert proc.returncode == 1
    assert "ZeroDivisionError" in _one_line(proc) and "CURATE_DEBUG" in proc.stderr


def test_describe_names_cause_and_fix_through_rays_wrapping():
    from ray.exceptions import ObjectStoreFullError, OutOfDiskError, RayTaskError

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/shards/000000.tar")
    assert describe(full).startswith("no space left on the device (/data/out/shards/000000.tar): free space")
    wrapped = RayTaskError("map_batches(_commit_parts)", "Traceback ...\nOSError: [Errno 28] No space left on device", full)
    assert "no space left" in describe(wrapped)
    text_only = RayTaskError("f", "Traceback ...\nOSError: [Errno 30] Read-only file system: '/x'", None)
    assert describe(text_only).startswith("read-only file system")
    assert "object_store_memory_mb" in describe(ObjectStoreFullError("store full"))
    assert "95%" in describe(OutOfDiskError("disk"))
    assert describe(PermissionError(errno.EACCES, "Permission denied", "/root/x")).startswith("permission denied (/root/x)")
    # not the machine's problem: stays a bug
    assert describe(ZeroDivisionError("division by zero")) is None
    assert describe(KeyError("uid")) is None
    assert describe(RuntimeError("CUDA error: torch.OutOfMemoryError")) is None
