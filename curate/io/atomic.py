"""Atomic file writes: write to a temporary name in the same folder, fsync, rename.

A killed run therefore never leaves a truncated shard or part: a file under its final name is complete.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARK = ".tmp-"


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path; on success fsync it and rename it to `path`, on error remove it."""
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


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_parquet(table: pa.Table, path: Path) -> None:
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


def remove_stale_tmp(folder: Path) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    n = 0
    if folder.exists():
        for p in folder.rglob(f".*{TMP_MARK}*"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n
