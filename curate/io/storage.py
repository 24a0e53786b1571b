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
HTTP_SCHEMES = ("http", "https")
# bucket stores: a listing names their buckets, and fsspec's listings cache must be off for them
BUCKET_SCHEMES = ("s3", "s3a", "gs", "gcs")


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
    try:
        from upath import UPath
    except ImportError:
        raise StorageError(f"{s}: remote paths need the storage extra: pip install 'curate[s3]' (or [gcs])") from None
    try:
        if isinstance(path, UPath):
            return path
        # no listings cache: Ray workers write parts behind this process's back, and a cached listing of
        # meta/ would miss them (a resumed run counted only the parts committed before the kill)
        options = {"use_listings_cache": False} if scheme(s) in BUCKET_SCHEMES else {}
        return UPath(s, **options)
    except (ImportError, ValueError) as err:  # no fsspec implementation for the scheme, or its package missing
        raise StorageError(f"{s}: {_scheme_fix(scheme(s), err)}") from None


def _scheme_fix(name: str | None, err: Exception) -> str:
    """Why a URL's scheme cannot be opened, and the fix."""
    from fsspec.registry import known_implementations

    if name not in known_implementations:
        return (f"unknown URL scheme {name}://; use a local path or s3://, gs://, hf://, http(s):// "
                "(or any fsspec protocol)")
    extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(name)
    return f"{name}:// needs its filesystem package: " + (f"pip install 'curate[{extra}]'" if extra else str(err))


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
    """A tarfile open for reading, local or remote, that refuses a cut one: walked to its end, a tar that
    ends without its end-of-archive block (a partial copy) raises tars.TruncatedTar at the end of the
    block, and one whose last member's data runs out raises it at that member (curate.io.tars).

    A remote file whose store gives no version is read from this fetch session's copy (session_copy); an
    http(s) one that has a version is streamed in one GET (tarfile's r|*): a server without Range support
    could not be read in tarfile's random-access mode ("Cannot seek streaming HTTP file"), and every caller
    walks members in order anyway. Other remote files are read through fsspec."""
    from curate.io import tars

    copy = session_copy(path)
    with _opened_tar(path, copy, tars.header_recorder()) as tar:
        try:
            yield tar
        except (tarfile.ReadError, EOFError) as err:
            if not tars.is_cut_data(err) or not tar.members:
                raise
            raise tars.TruncatedTar(tars.message(str(path), len(tar.members), tar.members[-1].name,
                                                 tars.CUT_DATA)) from None
        tars.check(tar, str(path))


@contextlib.contextmanager
def _opened_tar(path, copy, header):
    """open_tar's tarfile: a local file (or the session's copy) in random-access mode, an http(s) URL
    streamed, another remote file through fsspec."""
    if not is_remote(path) or copy is not None:
        with tarfile.open(copy or path, tarinfo=header) as tar:
            yield tar
    elif scheme(path) in HTTP_SCHEMES:
        fs, inner = filesystem(path)
        with fs.open(inner, "rb", block_size=0) as f, tarfile.open(fileobj=f, mode="r|*", tarinfo=header) as tar:
            yield tar
    else:
        with as_path(path).open("rb") as f, tarfile.open(fileobj=f, tarinfo=header) as tar:
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


def move(src, dst) -> None:
    """Move one file to `dst` (its folder made if needed): a rename on a local disk, so `dst` appears whole
    or not at all; on an object store a server-side copy then a delete (the copy appears whole, as a PUT)."""
    src, dst = as_path(src), as_path(dst)
    if not is_remote(dst):
        import os

        from curate.io.atomic import sync_dir

        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        sync_dir(dst.parent)
        return
    fs, inner = filesystem(dst)
    fs.mv(filesystem(src)[1], inner)


def glob(folder, pattern: str) -> list:
    """Sorted matches of `pattern` in `folder` (none when the folder is absent)."""
    folder = as_path(folder)
    return sorted(folder.glob(pattern), key=str) if folder.exists() else []


def worker_env() -> dict[str, str]:
    """The storage variables of this process that Ray workers need to reach the same stores, and to fetch
    into the cache and session this process uses: its CURATE_CACHE_DIR as CURATE_DRIVER_CACHE_DIR (only
    where set here; a worker's own CURATE_CACHE_DIR wins, see cache_dir) and its fetch session."""
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    if os.environ.get("CURATE_CACHE_DIR"):
        env[DRIVER_CACHE_ENV] = os.path.abspath(os.environ["CURATE_CACHE_DIR"])  # not the worker's cwd
    if os.environ.get(FETCH_SESSION_ENV):
        env[FETCH_SESSION_ENV] = os.environ[FETCH_SESSION_ENV]
    return env


def preflight(path, *, write: bool = False) -> None:
    """Fail fast, with the fix, on a remote path that cannot work: an unknown scheme, a read-only scheme as
    an output, an endpoint where nothing listens, a missing bucket, missing or wrong credentials. Runs
    before Ray starts and before anything is written; local paths pass (their checks are the callers')."""
    name = scheme(path)
    if name is None:
        return
    if write and name in READ_ONLY:
        raise StorageError(f"{path}: {name}:// is read-only here; write to a local folder, s3:// or gs://")
    p = as_path(path)
    if name in ("s3", "s3a"):
        _endpoint_listens(path)
    import fsspec

    # a fresh client, not fsspec's cached one: it must see the credentials of the environment as it is now
    fs, inner = fsspec.filesystem(p.protocol, skip_instance_cache=True, **p.storage_options), p.path
    bucket = inner.split("/", 1)[0]
    try:
        if name in BUCKET_SCHEMES:
            fs.ls(bucket, refresh=True)
        elif name in HTTP_SCHEMES:
            # info, not exists: fsspec's exists is False for a 401/403 too, and the refusal then surfaced
            # later, while indexing, as a bare aiohttp ClientResponseError (exit 1)
            fs.info(inner)
        else:
            fs.exists(inner)
    except FileNotFoundError as err:
        if name in HTTP_SCHEMES:  # fsspec's HTTP info raises FileNotFoundError for any failed request
            raise StorageError(f"{path}: {_http_failure(err)}") from None
        raise StorageError(f"{path}: bucket {bucket!r} does not exist (or is not visible with these credentials); "
                           "create it or fix the URL") from None
    except Exception as err:  # noqa: BLE001 - botocore/gcsfs raise many kinds; each becomes one line
        raise StorageError(f"{path}: {access_error(err, http=name in HTTP_SCHEMES)}") from None


def _endpoint_listens(path) -> None:
    """Refuse at once an S3 endpoint (AWS_ENDPOINT_URL) where nothing listens: botocore retries it for
    a minute before giving up."""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return
    u = urlparse(url)
    if not u.hostname:
        raise StorageError(f"{path}: AWS_ENDPOINT_URL={url} is not a URL; set it to http(s)://host:port")
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname, port), timeout=5):
            pass
    except OSError as err:
        raise StorageError(f"{path}: cannot reach the S3 endpoint {url} ({err.strerror or err}); start the "
                           "server or fix AWS_ENDPOINT_URL") from None


def is_remote_failure(err: BaseException) -> bool:
    """Whether `err` is a store or network refusing a request (aiohttp, botocore, gcsfs, a timeout), which a
    caller turns into one line for the user, rather than a bug in curate."""
    if isinstance(err, (OSError, TimeoutError)):
        return True
    roots = {c.__module__.split(".", 1)[0] for c in type(err).__mro__}
    return bool(roots & {"aiohttp", "botocore", "s3fs", "gcsfs", "google", "requests", "urllib3", "huggingface_hub"})


def _http_status(err: BaseException) -> int | None:
    """The HTTP status behind `err` (fsspec wraps aiohttp's ClientResponseError in a FileNotFoundError)."""
    from curate.environment_errors import chain

    return next((e.status for e in chain(err) if isinstance(getattr(e, "status", None), int)), None)


def _http_failure(err: BaseException) -> str:
    """One line for an http(s) URL that fsspec could not open: refused, missing, or unreachable."""
    status = _http_status(err)
    cause = err.__cause__ or err.__context__
    if status in (401, 403):
        return access_error(cause, http=True)
    if status == 404 or cause is None:
        return "not found (HTTP 404); fix the URL"
    return access_error(cause, http=True)


def access_error(err: Exception, http: bool = False) -> str:
    """One line for a failed request to a store: what went wrong and which setting fixes it (`http`: the
    path is an http(s) URL, which takes no credentials from the environment)."""
    kinds = {c.__name__ for c in type(err).__mro__}
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    status = getattr(err, "status", None)
    if http and (status in (401, 403) or any(code in text for code in ("401", "403", "Forbidden", "FORBIDDEN"))):
        return (f"the server refuses it (HTTP {text}); use a URL that needs no credentials "
                "(public or presigned), or the store's own s3:// or gs:// path with credentials in the environment")
    creds = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (for gs://: "
             "GOOGLE_APPLICATION_CREDENTIALS)")
    if kinds & {"NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"}:
        return f"no usable credentials ({text}); {creds}"
    if "PermissionError" in kinds or any(code in text for code in (
            "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403", "401")):
        return f"access denied ({text}); check the credentials: {creds}"
    if kinds & {"EndpointConnectionError", "ConnectionError", "ConnectTimeoutError", "ClientConnectorError"}:
        return f"cannot reach the {'server' if http else 'store'} ({text}); check {'the URL' if http else 'AWS_ENDPOINT_URL'} and the network"
    return f"cannot open it ({type(err).__name__}: {text})"


# --- remote files that settings name (checkpoints, entry lists, model files) ------------------------------
FETCH_MAX_BYTES = int(os.environ.get("CURATE_FETCH_MAX_BYTES", 16 << 30))  # one fetched file, at most
FETCH_CACHE_BYTES = int(os.environ.get("CURATE_FETCH_CACHE_BYTES", 32 << 30))  # the whole cache, at most


# The driver's CURATE_CACHE_DIR as a run hands it to cluster workers (curate.runner.ray_session): a machine's
# own CURATE_CACHE_DIR (set in its environment or in the job's runtime_env) wins over it.
DRIVER_CACHE_ENV = "CURATE_DRIVER_CACHE_DIR"


def cache_dir() -> Path:
    """This machine's curate cache: $CURATE_CACHE_DIR, default ~/.cache/curate. The one variable for every
    cache (fetched files, experiment working folders, the demo's corpora and filter), so one setting moves
    them all, e.g. off a small home disk.

    On a Ray worker that has no CURATE_CACHE_DIR of its own, the driver's (forwarded as
    CURATE_DRIVER_CACHE_DIR): a user who moved the cache to a big disk gets the workers' fetches there too,
    while a cluster that sets its machines' own cache folder keeps it (the driver's path may not exist there)."""
    own = os.environ.get("CURATE_CACHE_DIR") or os.environ.get(DRIVER_CACHE_ENV)
    return Path(own or os.path.join(os.path.expanduser("~"), ".cache", "curate"))


def fetch_cache_dir() -> Path:
    """Where fetched files live on this machine: $CURATE_CACHE_DIR/fetched (default ~/.cache/curate/fetched).

    Why per machine and not in the run folder: a remote run has no local folder, and every Ray worker on a
    machine (and every run) shares one copy of a checkpoint instead of downloading it again."""
    return cache_dir() / "fetched"


# Response headers fsspec's HTTPFileSystem.info keeps, under their HTTP names: each changes when the file at
# the URL is rewritten (a tag, a digest of the bytes, a modification time)
HTTP_VALIDATORS = ("ETag", "Last-Modified", "Content-MD5", "Digest")
# the variable naming one invocation's fetch session (fetch_session): files with no version are reused in it only
FETCH_SESSION_ENV = "CURATE_FETCH_SESSION"


def _remote_file(url: str, where: str) -> tuple[object, str, int, str | None]:
    """(filesystem, inner path, size, version) of one remote file; version (`_version`) changes when the
    object is rewritten under the same URL, and is None when the store gives nothing that would."""
    import fsspec

    try:
        fs, inner = fsspec.core.url_to_fs(url, **({"use_listings_cache": False} if scheme(url) in BUCKET_SCHEMES else {}))
        info = fs.info(inner)
    except FileNotFoundError as err:
        if scheme(url) in HTTP_SCHEMES and _http_status(err) not in (None, 404):
            raise StorageError(f"{where}: {_http_failure(err)}") from None
        raise StorageError(f"{where} does not exist; fix the URL or upload the file") from None
    except (ImportError, ValueError) as err:
        raise StorageError(f"{where}: {_scheme_fix(scheme(url), err)}") from None
    except Exception as err:  # noqa: BLE001 - botocore/aiohttp raise many kinds; each becomes one line
        raise StorageError(f"{where}: {access_error(err, http=scheme(url) in HTTP_SCHEMES)}") from None
    if info.get("type") == "directory":
        raise StorageError(f"{where} is a folder, not a file")
    size = int(info.get("size") or 0)
    return fs, inner, size, _version(url, info, size)


def remote_file_version(url: str) -> tuple[object, str, int, str | None]:
    """(filesystem, inner path, size, version) of one remote file (`_version`: None when the store gives
    nothing that changes on a rewrite). Raises StorageError (one line) when it cannot be read."""
    return _remote_file(url, url)


def _version(url: str, info: dict, size: int) -> str | None:
    """What identifies this version of the object at `url`, from its fsspec info; None when nothing does.

    http(s): the size and every validator the server sends (HTTP_VALIDATORS), because servers differ in
    which one changes on a rewrite (a weak or missing ETag, a Last-Modified with one-second resolution); a
    server that sends none gives None, never the size alone (a same-size rewrite, a re-exported shard or a
    retrained checkpoint of the same architecture, would reuse the stale copy). Object stores: their ETag
    or md5 (a content hash the store keeps; hf: the git blob id), else size and modification time, as runs
    recorded them before (a resumed run compares them)."""
    if scheme(url) in HTTP_SCHEMES:
        found = [f"{k}={info[k]}" for k in HTTP_VALIDATORS if info.get(k)]
        return "|".join([str(size), *found]) if found else None
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("blob_id")
    if tag:
        return str(tag)
    when = info.get("LastModified") or info.get("mtime") or info.get("updated") or info.get("last_modified")
    return f"{size}:{when}" if when else None


@contextlib.contextmanager
def fetch_session(session: str | None = None):
    """One invocation's fetch session: while it lasts, $CURATE_FETCH_SESSION names it, and the processes it
    starts (a local Ray's workers, DataLoader workers) or forwards it to (a cluster's, through worker_env)
    inherit it; the tasks and actors of a run carry it too (curate.runner._in_session), for a Ray the caller
    started before the session existed.

    Why: a file whose store gives no version (`_version` None) may change between invocations without any
    sign, so local_file reuses its cached copy only within the session that fetched it: one download per
    machine and invocation, shared by its workers, and a fresh one in the next invocation.

    `session`: join that session (a worker running a task of the invocation that named it) for the block.
    None: inside an open session (set by an outer invocation, such as an experiment's training and
    evaluation, or by hand to share one session across several commands) join it, or else start one. Every
    part of one invocation reads the same bytes. Usable as a decorator."""
    import uuid

    before = os.environ.get(FETCH_SESSION_ENV)
    if session is None and before:
        yield before
        return
    os.environ[FETCH_SESSION_ENV] = session or uuid.uuid4().hex
    try:
        yield os.environ[FETCH_SESSION_ENV]
    finally:
        if before is None:
            os.environ.pop(FETCH_SESSION_ENV, None)
        else:
            os.environ[FETCH_SESSION_ENV] = before


# Schemes whose URLs in stage settings name stored files (checkpoints, entry lists). http(s) is left out:
# in a setting it is as often an endpoint (an OpenAI-compatible server) as a file, and a HEAD to an endpoint
# at every start is neither cheap nor meaningful.
FILE_SCHEMES = BUCKET_SCHEMES + ("hf", "az", "abfs", "abfss", "adl")


def remote_identity(url: str) -> dict | None:
    """What must not change under a resumed run for a file a setting names by URL: its size and version
    ({"files": 1, "bytes", "version"}, see remote_version); None when `url` is not an object-store URL or
    names no file."""
    if scheme(url) not in FILE_SCHEMES:
        return None
    try:
        size, version = remote_version(url)
    except StorageError:
        return None
    return {"files": 1, "bytes": size, "version": version}


def remote_version(url: str, where: str = "") -> tuple[int, str]:
    """(size, version) of a remote file, for a resumed run's check that it is the same file: the store's
    version (`_version`) or, when the store gives none, "sha256=<digest of its bytes>", fetched whole once
    into this session's cache (where the run's own reads of it find it), since the size alone would let a
    same-size rewrite through. Raises StorageError (one line) when it cannot be read."""
    _fs, _inner, size, version = _remote_file(url, where or url)
    if version is None:
        copy = local_file(url, where)
        version = "sha256=" + _source(copy.parent).get("sha256", "")
    return size, version


def _source(folder: Path) -> dict:
    """What local_file recorded about a fetched copy ({} when nothing readable)."""
    import json

    try:
        return json.loads((folder / ".source.json").read_text())
    except (OSError, ValueError):
        return {}


def local_file(path, setting: str = "", max_bytes: int | None = None) -> Path:
    """A local file for `path`: a local path as it is, a URL (s3://, gs://, http(s)://, hf://, file://)
    fetched through fsspec into the machine's cache, keyed by the URL and the object's version (`_version`:
    an object store's ETag, or size and modification time; every validator an http(s) server sends), so a
    changed object is fetched again and an unchanged one never is.

    A file with no version (an http(s) server that sends no ETag, Last-Modified, Content-MD5 or Digest) is
    reused only within the fetch session that fetched it ($CURATE_FETCH_SESSION, one per run: see
    fetch_session), and fetched again by the next run or by a call outside any session: nothing tells a
    rewrite of the same size from the file itself. The copy's sha256 is recorded next to it (.source.json)
    for remote_version.

    Raises StorageError (one line naming `setting` and the URL) when the object is missing, unreadable or
    larger than `max_bytes` (CURATE_FETCH_MAX_BYTES, 16 GiB by default)."""
    if not is_remote(path):
        s = str(path)
        return Path(s[len("file://"):] if s.startswith("file://") else s).expanduser()
    url = str(path)
    where = f"{setting}: {url}" if setting else url
    return _fetch(url, where, FETCH_MAX_BYTES if max_bytes is None else max_bytes, *_remote_file(url, where))


def session_copy(path) -> Path | None:
    """For a remote file whose store gives no version (an http(s) server sending no validator): its copy
    in this fetch session's cache, fetched whole once per machine and session (local_file). None for a local
    path or a versioned file, which readers stream in place.

    Why: training reads each shard once per epoch and an experiment reads it for every data set, seed and
    fingerprint; streamed each time, a versionless shard was downloaded again at each read, and a rewrite
    between two reads went unseen, so two arms (or a fingerprint and the training it vouches for) could
    read different bytes. Within one session they all read this one copy."""
    if not is_remote(path):
        return None
    url = str(path)
    fs, inner, size, version = _remote_file(url, url)
    return None if version is not None else _fetch(url, url, FETCH_MAX_BYTES, fs, inner, size, version)


def _fetch(url: str, where: str, limit: int, fs, inner: str, size: int, version: str | None) -> Path:
    """local_file's work once the object's size and version are known: the cached copy, or a fresh one."""
    import hashlib
    import json
    import tempfile
    import uuid

    if size > limit:
        raise StorageError(f"{where} is {size:,} bytes, over the {limit:,}-byte limit on fetched files "
                           "(CURATE_FETCH_MAX_BYTES)")
    session = None if version else os.environ.get(FETCH_SESSION_ENV) or uuid.uuid4().hex  # none: not reused
    key = hashlib.sha256(f"{url}\n{version or 'session=' + session}".encode()).hexdigest()[:32]
    folder = fetch_cache_dir() / key
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "file"
    dest = folder / name
    if dest.is_file() and dest.stat().st_size == size and "sha256" in _source(folder):
        os.utime(dest)  # most recently used: pruned last
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fetch-")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, fs.open(inner, "rb") as src:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
                if f.tell() > limit:
                    raise StorageError(f"{where} is over the {limit:,}-byte limit on fetched files")
        if session is None:
            os.replace(tmp, dest)  # concurrent workers fetching the same version each publish a whole copy
        elif not _publish_first(tmp, dest):  # another worker of this session published its copy first: read
            digest, size = _file_digest(dest), dest.stat().st_size  # that one, as it does, and record it if
            # it has not (yet: it records the same; or it died between publishing and recording)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"{where}: {access_error(err, http=scheme(url) in HTTP_SCHEMES)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    record = {"url": url, "version": version, "size": size, "sha256": digest.hexdigest(), "session": session}
    from curate.io.atomic import write_bytes

    write_bytes(folder / ".source.json", json.dumps(record).encode())  # whole or absent: never half a record
    _prune_fetch_cache(keep=folder)
    return dest


def _file_digest(path: Path):
    """A sha256 object of a file's bytes (_fetch records the digest of the copy it returns)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h


def _publish_first(tmp: str, dest: Path) -> bool:
    """Publish `tmp` as `dest` unless a copy is there already (False then). Why not os.replace: two workers
    of one session fetching a file that has no version at once may get different bytes if it is rewritten
    meanwhile, and the later replace would give the session's later readers other bytes than the earlier
    ones read; the first copy published is the session's, for every reader."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: the last copy wins, as for versioned files
        os.replace(tmp, dest)
    return True


def _prune_fetch_cache(keep: Path) -> None:
    """Delete the least recently used fetched files while the cache is over CURATE_FETCH_CACHE_BYTES."""
    import shutil

    entries = []
    for d in fetch_cache_dir().iterdir():
        files = [f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")] if d.is_dir() else []
        if files:
            entries.append((max(f.stat().st_mtime for f in files), sum(f.stat().st_size for f in files), d))
    total = sum(size for _, size, _ in entries)
    for _, size, d in sorted(entries, key=lambda e: e[0]):
        if total <= FETCH_CACHE_BYTES:
            break
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)
            total -= size


# --- output folders on object stores (training runs, experiments) ------------------------------------------
class Mirror:
    """A local working folder for an output that may live on an object store.

    Why: torch.save, open_clip and matplotlib write local files, and a checkpoint must never be visible
    half-written. For a local output `local` is the output itself and push/pull do nothing. For a URL,
    `local` is a private temporary folder: `pull` copies named files down (to resume), and `push` uploads
    a finished file whole under its final name (one PUT, or a multipart upload that appears only when it
    completes), in the order the caller gives: the file that marks progress goes last."""

    def __init__(self, target, stable: bool = False):
        """`stable`: work in $CURATE_CACHE_DIR/outputs/<hash of the URL>, kept between invocations, instead of
        a temporary folder removed with this object. Why: an experiment records the local paths of the
        random-subset tars it writes in each run's config, and reuses a run only for the same config."""
        import hashlib
        import tempfile

        self.target = str(target)
        self.remote = is_remote(target)
        self._seen: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns) as last synced
        if self.remote:
            preflight(self.target, write=True)
            if stable:
                key = hashlib.sha256(self.target.rstrip("/").encode()).hexdigest()[:16]
                self.local = cache_dir() / "outputs" / key
                self.local.mkdir(parents=True, exist_ok=True)
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="curate-out-")
                self.local = Path(self._tmp.name)
            self.root = as_path(self.target)
        else:
            self.local = as_path(target)
            self.root = self.local

    def url(self, rel: str = "") -> str:
        """The output-side name of `rel` (a URL for a remote output)."""
        return str(self.root / rel) if rel else str(self.root)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def pull(self, *rels: str, tree: bool = False, skip=None) -> list[str]:
        """Copy these files (or, with `tree`, every file under these folders, "" for all) from the remote
        output into `local`, except names for which `skip(rel)` is true; returns the relative names copied.
        Missing ones are skipped."""
        if not self.remote:
            return []
        fs, base = filesystem(self.target)
        base = base.rstrip("/")
        got = []
        for rel in rels:
            src = f"{base}/{rel}".rstrip("/")
            names = (fs.find(src) if tree else [src] if fs.isfile(src) else [])
            for name in names:
                r = name[len(base) + 1:]
                if skip and skip(r):
                    continue
                (self.local / r).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(name, str(self.local / r))
                self._seen[r] = _stamp(self.local / r)
                got.append(r)
        return got

    def push(self, *paths) -> None:
        """Upload these local files (or every file under these local folders), each whole, in order."""
        if not self.remote:
            return
        fs, base = filesystem(self.target)
        base = base.rstrip("/")
        for p in paths:
            p = Path(p)
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
            for f in files:
                rel = f.relative_to(self.local).as_posix()
                if self._seen.get(rel) == _stamp(f):
                    continue  # uploaded (or pulled) as it is now
                fs.put_file(str(f), f"{base}/{rel}")
                self._seen[rel] = _stamp(f)


def _stamp(f: Path) -> tuple[int, int]:
    st = f.stat()
    return st.st_size, st.st_mtime_ns
