"""Reading a tar to its end, or saying that it has none: the one owner of curate's end-of-archive check.

Why: Python's tarfile ends quietly where a file ends at a header. A tar cut at a member boundary (an
interrupted copy or upload), or inside a header block, reads as a shorter tar, and every reader built on
it (training, WebDataset input, export, refilter, an experiment's subsets) lost the tail without a word. A
tar written whole ends in an all-zero header block (the end-of-archive marker), so a reader that records
the last header block tarfile parsed knows, at no extra read, whether it saw the end or a cut.

`header_recorder()` gives the `tarinfo` class that records it (one per open tar: the record is the
class's); `problem(tar)` reads it once the tar has been walked to its end.
"""
from __future__ import annotations

import tarfile

ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
CUT_DATA = "its data ends inside that member"  # why, when a member's data (or a gzip stream) ran out


class TruncatedTar(ValueError):
    """A tar that ends before its archive does (no end-of-archive block after its last member), or breaks
    off at a damaged header: the members after that point are missing and nothing says how many."""


def header_recorder() -> type[tarfile.TarInfo]:
    """A TarInfo class, for tarfile.open(tarinfo=...), that records every header block tarfile parses.

    `last` is the block tarfile stopped or is at (b"" where the file ended, fewer than 512 bytes where it
    ended inside a header); `stopped` is True once a block was not a member's header (tarfile's end of
    iteration), so a caller that broke off early is told nothing. A fresh class per tar, as the record is
    the class's: two tars read at once (two threads, two DataLoader workers) keep their own."""
    class Header(tarfile.TarInfo):
        last: bytes | None = None
        stopped = False

        @classmethod
        def frombuf(cls, buf, encoding, errors):
            Header.last, Header.stopped = bytes(buf), True
            info = super().frombuf(buf, encoding, errors)
            Header.stopped = False  # a member's header: the walk goes on
            return info

    return Header


def end_problem(block: bytes | None) -> str | None:
    """Why a tar whose walk stopped at header block `block` is incomplete; None for the end-of-archive block
    (or no block read at all)."""
    if block is None or block == ZERO_BLOCK:
        return None
    if block and not block.strip(b"\0"):  # cut inside the end-of-archive block: every member is whole (a
        return None                        # header's first byte is its name's, never zero)
    if not block:
        return "it ends without the tar end-of-archive block"
    if len(block) < tarfile.BLOCKSIZE:
        return f"it ends inside a tar header ({len(block)} of {tarfile.BLOCKSIZE} bytes)"
    return "a damaged tar header follows it"


def problem(tar: tarfile.TarFile) -> str | None:
    """Why `tar` (opened with a header_recorder) is incomplete, once its walk has ended; None when it ended
    on the end-of-archive block, or when the walk has not reached its end (the caller broke off)."""
    header = tar.tarinfo
    if not getattr(header, "stopped", False) or not tar.members:
        return None  # walk unfinished, or nothing parsed at all (tarfile itself refuses an empty/non-tar file)
    return end_problem(header.last)


def truncated(tar: tarfile.TarFile) -> bool:
    """Whether `tar`'s walk ended because the file ran out at or inside a header (a cut copy), rather than
    at a full header block that is damaged."""
    last = getattr(tar.tarinfo, "last", None)
    return problem(tar) is not None and last is not None and len(last) < tarfile.BLOCKSIZE


def message(where: str, count: int, last: str | None, why: str) -> str:
    """The one line a user reads for an incomplete tar: which file, how far it got, and the fix."""
    return (f"truncated tar {where}: after {count} member(s) (the last {last!r}) {why}, so the rest of it is "
            "missing (a partial copy or upload?); copy it again or leave it out")


def check(tar: tarfile.TarFile, where: str) -> None:
    """Raise TruncatedTar when `tar`, walked to its end, did not end on the end-of-archive block."""
    why = problem(tar)
    if why is not None:
        raise TruncatedTar(message(where, len(tar.members), tar.members[-1].name, why))


def is_cut_data(err: BaseException) -> bool:
    """Whether a tarfile/gzip error is a file that ran out inside a member's data or a compressed stream
    (tarfile's 'unexpected end of data', gzip's EOFError), rather than bytes that are not a tar."""
    return (isinstance(err, tarfile.ReadError) and "unexpected end of data" in str(err)) or isinstance(err, EOFError)
