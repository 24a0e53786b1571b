"""One line a user can act on for failures of the machine rather than of curate: a full disk, a folder
that cannot be written, a read-only file system, Ray's object store or memory running out.

These arrive as an OSError in the driver, or wrapped by Ray (RayTaskError, whose `cause` is the worker's
exception, or only its traceback text) from a worker: `describe` looks through both. Anything it does not
recognise is left to the caller as a bug (exit 1).
"""
from __future__ import annotations

import errno
import re

_RESUME = "--resume keeps the parts already committed"
_OS_CAUSES = {
    errno.ENOSPC: ("no space left on the device", f"free space, or use an --output on a larger disk, and run again ({_RESUME})"),
    errno.EDQUOT: ("disk quota exceeded", f"free space or raise the quota, and run again ({_RESUME})"),
    errno.EFBIG: ("file too large for this file system or the process' file size limit (ulimit -f)",
                  "raise the limit, or use an --output on another file system"),
    errno.EROFS: ("read-only file system", "use an --output on a writable file system"),
    errno.EACCES: ("permission denied", "use an --output you can write to, or fix the folder's permissions"),
    errno.EPERM: ("operation not permitted", "use an --output you can write to (check chattr/immutable flags and mounts)"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or lower a stage's concurrency"),
}
# what a worker's exception looks like when Ray only kept its text
_OS_TEXT = [
    (re.compile(r"No space left on device|\[Errno 28\]"), errno.ENOSPC),
    (re.compile(r"Disk quota exceeded|\[Errno 122\]"), errno.EDQUOT),
    (re.compile(r"Read-only file system|\[Errno 30\]"), errno.EROFS),
    (re.compile(r"Permission denied|\[Errno 13\]"), errno.EACCES),
]
_RAY_CAUSES = {
    "ObjectStoreFullError": "Ray's object store is full: raise ray.object_store_memory_mb (or the cluster's "
                            "--object-store-memory), or lower output.samples_per_shard",
    "OutOfDiskError": "Ray's disk is (nearly) full (Ray stops at 95%): free space on the disk of Ray's temp "
                      "folder (/tmp/ray) and of the --output, and run again",
    "OutOfMemoryError": "a Ray worker ran out of memory and was killed: lower output.samples_per_shard or a "
                        "stage's concurrency, or give the machine more memory",
    "WorkerCrashedError": "a worker process died on the same part on every try, outside the rows of any stage "
                          "call (reading or writing the part, or the machine killing it, e.g. the OOM killer): "
                          "committed parts are kept; run with -v to see the worker's log, then --resume",
    "ActorDiedError": "a model worker process died on the same part on every try, outside the rows of any "
                      "stage call (or the machine killed it, e.g. the OOM killer): committed parts are kept; run "
                      "with -v to see its log, then --resume",
}


def chain(err: BaseException):
    """err and every exception it wraps (Ray's `cause`, __cause__, __context__), each once."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (getattr(e, "cause", None), e.__cause__, e.__context__) if isinstance(c, BaseException)]


def _os_line(code: int, filename=None) -> str:
    cause, fix = _OS_CAUSES[code]
    where = f" ({filename})" if filename else ""
    return f"{cause}{where}: {fix}"


def describe(err: BaseException) -> str | None:
    """A one-line cause-and-fix for an environment failure anywhere in err's chain, else None."""
    errors = list(chain(err))
    for e in errors:
        if isinstance(e, OSError) and e.errno in _OS_CAUSES:
            return _os_line(e.errno, e.filename)
    for e in errors:
        for cls in type(e).__mro__:  # Ray's own classes only: torch has an OutOfMemoryError too (CUDA)
            if cls.__name__ in _RAY_CAUSES and cls.__module__.startswith("ray"):
                return _RAY_CAUSES[cls.__name__]
    text = "\n".join(str(e) for e in errors)
    for name, line in _RAY_CAUSES.items():
        if f"ray.exceptions.{name}" in text or (name != "OutOfMemoryError" and name in text):
            return line
    for pattern, code in _OS_TEXT:
        if pattern.search(text):
            return _os_line(code)
    return None
