"""The one filesystem layer for run directories: a local path or an fsspec URL (`s3://`, `gs://`, `memory://`,
`file://`) becomes a Path-like object, and Arrow, DuckDB and tarfile read through it.

Local paths stay `pathlib.Path` (nothing changes for them); URLs become universal-pathlib `UPath`s, which
have the same API (`/`, exists, glob, read_text, write_bytes, iterdir) over fsspec. Credentials come from
the filesystem package's standard environment: for S3 (s3fs/botocore) AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL for S3-compatible stores.
"""
from __future__ import annotations

import contextlib
import os
import re
import tarfile
from pathlib import Path

# environment variables that reach the filesystem packages: a run forwards them to its Ray workers
ENV_PREFIXES = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCSFS_", "FSSPEC_", "HF_TOKEN")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# schemes a run directory can live on (http(s) is read-only)
READ_ONLY = ("http", "https", "hf")


class StorageError(Exception):
    """A path that cannot be used (unknown scheme, missing bucket, bad credentials); one line for the user."""


def scheme(path) -> str | None:
    """The URL scheme of `path` (`s3`, `gs`, ...), None for a local path or `file://`."""
    m = _SCHEME.match(str(path))
    if not m or m.group(1).lower() in ("file", "local"):
        return None
    return m.group(1).lower()


def is_remote(path) -> bool:
    return scheme(path) is not None


def as_path(path):
    """A Path for a local path (or file:// URL), a UPath for any other URL."""
    if isinstance(path, Path) and not is_remote(path):
        return path
    s = str(path)
    if s.startswith("file://"):
        return Path(s[len("file://"):])
    if not is_remote(s):
        return Path(s)
    from upath import UPath

    return path if isinstance(path, UPath) else UPath(s)


def filesystem(path):
    """(fsspec filesystem, path inside it) of a remote path; (None, str) for a local one."""
    if not is_remote(path):
        return None, str(as_path(path))
    p = as_path(path)
    return p.fs, p.path


def arrow(path) -> tuple[str, object]:
    """(path, filesystem) arguments for pyarrow readers and writers: filesystem None for local paths."""
    fs, inner = filesystem(path)
    return inner, fs


def read_table(path, **kwargs):
    import pyarrow.parquet as pq

    inner, fs = arrow(path)
    return pq.read_table(inner, filesystem=fs, **kwargs)


def read_metadata(path):
    import pyarrow.parquet as pq

    fs, inner = filesystem(path)
    if fs is None:
        return pq.read_metadata(inner)
    with fs.open(inner, "rb") as f:
        return pq.read_metadata(f)


def dataset(paths: list, **kwargs):
    """A pyarrow dataset over Parquet files that all live on one filesystem."""
    import pyarrow.dataset as pads

    paths = list(paths)
    if not paths:
        return pads.dataset([], format="parquet", **kwargs)
    fs, _ = filesystem(paths[0])
    return pads.dataset([filesystem(p)[1] for p in paths], format="parquet", filesystem=fs, **kwargs)


@contextlib.contextmanager
def open_tar(path):
    """A tarfile open for reading, local or remote (streamed through fsspec)."""
    if not is_remote(path):
        with tarfile.open(path) as tar:
            yield tar
        return
    with as_path(path).open("rb") as f, tarfile.open(fileobj=f) as tar:
        yield tar


def rmtree(path) -> None:
    """Remove a folder (or every object under a prefix) if it is there."""
    path = as_path(path)
    if not is_remote(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    fs, inner = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(inner, recursive=True)


def glob(folder, pattern: str) -> list:
    """Sorted matches of `pattern` in `folder` (none when the folder is absent)."""
    folder = as_path(folder)
    return sorted(folder.glob(pattern), key=str) if folder.exists() else []


def worker_env() -> dict[str, str]:
    """The storage variables of this process that Ray workers need to reach the same stores."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
