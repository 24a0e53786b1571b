"""The shard writer's tar stream is byte for byte what `tarfile` (PAX format) writes for the same members:
short ASCII names through its ustar template, long and non-ASCII names through tarfile itself."""
from __future__ import annotations

import io
import tarfile

from curate.io.shard_writer import _TarOut, write_tar


def _reference(members, mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            info.uname = info.gname = "curate"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_stream_equals_tarfile_bytes():
    members = [("abc.txt", b"a caption"), ("abc.json", b"{}"), ("empty.txt", b""), ("x" * 96 + ".jpg", b"\xff" * 512),
               ("y" * 97 + ".json", b"{}"),  # 101 characters: pax path record
               ("h0123456789abcdef01234567.txt", "déjà vu".encode()), ("ü-uid.txt", b"non-ASCII name: pax"),
               ("big.bin", bytes(range(256)) * 41), ("large.jpg", bytes(range(256)) * 300 + b"x"),  # one write / three
               ("at-limit.bin", b"z" * 65536)]
    for n in (0, 1, 3, len(members)):
        buf = io.BytesIO()
        out = _TarOut(buf, 1_700_000_000)
        for name, data in members[:n]:
            out.add(name, data)
        out.close()
        assert buf.getvalue() == _reference(members[:n], 1_700_000_000), n


def test_write_tar_reads_back(tmp_path):
    rows = [{"key": f"k{i}", "text": f"caption {i}", "status": "ok"} for i in range(3)]
    write_tar(tmp_path / "s.tar", rows, "original")
    with tarfile.open(tmp_path / "s.tar") as tar:
        names = tar.getnames()
        assert names[:2] == ["k0.txt", "k0.json"] and len(names) == 6
        assert tar.extractfile("k2.txt").read() == b"caption 2"
