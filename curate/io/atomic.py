"""Atomic writes: a file under its final name is always complete.

Local files: write to a temporary name in the same folder, fsync, rename. Object stores (s3://, gs://) have
no rename: the file is written to a local temporary file and then PUT whole under its final name (a PUT is
atomic per object; large files go up as a multipart upload, which becomes visible only when it completes),
so no reader ever sees a half-written object. Which object marks a part as committed is the run
directory's business (curate/io/rundir.py): the meta part, written last.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.io import storage

TMP_MARK = ".tmp-"


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a local temporary path; on success publish it as `path` (fsync + rename locally, one whole
    PUT on an object store), on error remove it."""
    if storage.is_remote(path):
        with _remote_path(storage.as_path(path)) as tmp:
            yield tmp
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def _remote_path(path):
    fd, name = tempfile.mkstemp(prefix="curate-put-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fs, inner = storage.filesystem(path)
        fs.put_file(str(tmp), inner)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> None:
    if storage.is_remote(path):
        fs, inner = storage.filesystem(path)
        fs.pipe_file(inner, data)  # one PUT of the whole object
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_parquet(table: pa.Table, path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def sync_dir(path: Path) -> None:
    """fsync a directory so renames inside it survive a crash."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_tmp(folder) -> int:
    """Delete temporary files a killed run left behind; returns how many. Object stores hold none: an
    unfinished PUT or multipart upload never appears under any name."""
    n = 0
    if storage.is_remote(folder):
        return 0
    folder = Path(folder)
    if folder.exists():
        for p in folder.rglob(f".*{TMP_MARK}*"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


@contextlib.contextmanager
def staged_dir(dst: Path, kind: str, error: type[Exception]):
    """A new local folder that appears as `dst` only complete: the block fills a hidden sibling, which is
    renamed onto `dst` (absent or empty) when the block ends without an exception, and removed otherwise.

    Why one folder per process: with one fixed name, a second command writing the same `dst` removed the
    first's folder and wrote into the same path, and the first then published a mix of both. A staging
    folder of a process that no longer runs (a killed command) is removed when the next one starts; a
    `dst` that another process filled meanwhile is refused with `error` (one line) and this one's output is
    discarded."""
    prefix = f".{dst.name}.{kind}-tmp-"
    _remove_dead_stages(dst.parent, prefix)
    tmp = dst.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:
            if dst.exists():
                dst.rmdir()  # empty (the command checked): a folder the user made for the output
            tmp.rename(dst)
        except OSError:
            raise error(f"{dst} was written by another process while this one ran; nothing of this one was "
                        "kept (choose another --output)") from None
        sync_dir(dst.parent)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_dead_stages(parent: Path, prefix: str) -> None:
    """Remove staging folders (`<prefix><pid>-<id>`) whose process no longer runs on this machine."""
    if not parent.is_dir():
        return
    import shutil

    for p in parent.glob(f"{prefix}*"):
        pid = p.name[len(prefix):].partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # another user's process: not ours to remove
            pass
