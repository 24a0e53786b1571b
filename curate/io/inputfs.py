"""Where input files are found and opened: the one place input paths are resolved.

Paths go through fsspec, so a local path, `file://` and (with the filesystem package installed) remote URLs
resolve the same way; `{00000..00099}.tar` brace ranges and globs expand like WebDataset's own shard lists.
"""
from __future__ import annotations

import glob as _glob

import braceexpand
import fsspec
from fsspec.core import url_to_fs

MAX_EXPANDED = 1_000_000  # brace ranges beyond this are a typo, not a corpus


def is_pattern(path: str) -> bool:
    return any(c in path for c in "{*?[")


def filesystem(path: str):
    """(fsspec filesystem, path inside it) for `path`."""
    return url_to_fs(path)


def expand(path: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files named by `path` (a file, a folder searched recursively, a glob or a brace range) whose names end
    with one of `suffixes`, sorted; hidden files and `_`-prefixed ones are skipped in folders."""
    fs, _ = filesystem(path)
    out: list[str] = []
    patterns = braceexpand.braceexpand(path)
    for n, pat in enumerate(patterns):
        if n >= MAX_EXPANDED:
            raise ValueError(f"{path} expands to more than {MAX_EXPANDED} names")
        _, inner = filesystem(pat)
        if _glob.has_magic(inner):
            out += [p for p in fs.glob(inner) if p.lower().endswith(suffixes) and fs.isfile(p)]
        elif fs.isdir(inner):
            found = fs.find(inner)
            out += [p for p in found if p.lower().endswith(suffixes)
                    and not any(part.startswith((".", "_")) for part in p[len(inner):].split("/") if part)]
        elif fs.exists(inner):
            out.append(inner)
    return sorted(dict.fromkeys(_full(fs, p) for p in out))


def _full(fs, p: str) -> str:
    """A found path as one that opens again: plain for local files, with its protocol for remote ones."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return p if "file" in protocols or "local" in protocols else fs.unstrip_protocol(p)


def exists(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.exists(inner)


def open_read(path: str):
    """A binary file object for reading `path` (local or fsspec URL)."""
    return fsspec.open(path, "rb").open()


def size(path: str) -> int:
    fs, inner = filesystem(path)
    return int(fs.size(inner))
