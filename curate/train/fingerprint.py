"""Content fingerprints of shards and eval sets, so `curate experiment` reuses a run only for the same bytes.

Why contents, not paths: re-curating into the same folder, or regenerating an eval set in place, keeps
every path and changes every number; a run reused on paths alone reports the old model on the new data.
Each file is hashed once (sha256, streamed in 1 MiB blocks) and the digest cached by (path, size,
mtime_ns), so repeating an experiment re-reads nothing that did not change.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from curate.io import storage
from curate.train.data import DataError, expand_shards

BLOCK = 1 << 20


class DigestCache:
    """sha256 per file, remembered in a JSON file keyed by resolved path, size and mtime_ns."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, str] = {}
        if self.path and self.path.is_file():
            try:
                self.entries = dict(json.loads(self.path.read_text()))
            except (ValueError, TypeError):
                self.entries = {}  # a damaged cache only costs a re-hash

    def digest(self, file: str | Path) -> tuple[int, str]:
        if storage.is_remote(file):
            return self._remote_digest(str(file))
        p = Path(file).resolve()
        st = p.stat()
        key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.entries:
            with open(p, "rb") as f:
                self.entries[key] = _sha256(f)
        return st.st_size, self.entries[key]

    def _remote_digest(self, url: str) -> tuple[int, str]:
        """An object's digest, cached by URL and the object's version (storage.remote_file_version: an
        object store's ETag, every validator an http server sends). A file with no version is never cached
        here (keyed by its size alone, a same-size rewrite of an http shard kept its stale digest): its digest
        is that of the fetch session's copy (storage.remote_version), the bytes the training reads."""
        try:
            fs, inner, size, version = storage.remote_file_version(url)
            if version is None:
                size, version = storage.remote_version(url)
                return size, version.removeprefix("sha256=")
        except storage.StorageError as err:
            raise DataError(str(err)) from None
        key = f"{url}|{size}|{version}"
        if key not in self.entries:
            with fs.open(inner, "rb") as f:
                self.entries[key] = _sha256(f)
        return size, self.entries[key]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)


def _sha256(f) -> str:
    h = hashlib.sha256()
    while block := f.read(BLOCK):
        h.update(block)
    return h.hexdigest()


def files_fingerprint(files: list[str | Path], cache: DigestCache) -> dict:
    """{"sha256": over (size, digest) of every file in order, "files": n, "bytes": total}."""
    h = hashlib.sha256()
    total = 0
    for f in files:
        size, dig = cache.digest(f)
        total += size
        h.update(f"{size}:{dig}\n".encode())
    return {"sha256": h.hexdigest(), "files": len(files), "bytes": total}


def shards_fingerprint(specs: list[str], cache: DigestCache) -> dict:
    """Fingerprint of the tars a shard list resolves to (what training reads)."""
    return files_fingerprint(expand_shards(specs), cache)


def eval_fingerprint(eval_dir: str | Path, cache: DigestCache) -> dict:
    """Fingerprint of an eval set: its tars and classes.json (class names and prompts change metrics too)."""
    return files_fingerprint([*expand_shards([str(eval_dir)]), storage.as_path(eval_dir) / "classes.json"], cache)
