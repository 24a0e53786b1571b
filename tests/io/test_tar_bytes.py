"""The shard writer's tar stream is byte for byte what `tarfile` (PAX format) writes for the same members:
short ASCII names through its ustar template, long and non-ASCII names through tarfile itself; and its
columnar path (members of many samples at once) is byte for byte its row path."""
from __future__ import annotations

import io
import tarfile

import pyarrow as pa
import pytest

from curate.io.members import member_columns, table_members
from curate.io.shard_writer import _TarOut, key_for, keys_for, write_tar


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


def _rows_tar(table, policy="both") -> bytes:
    buf = io.BytesIO()
    out = _TarOut(buf, 1_700_000_000)
    for members in table_members(table, policy):
        for name, data in members:
            out.add(name, data)
    out.close()
    return buf.getvalue()


def _columns_tar(table, policy="both", step=3) -> bytes:
    buf = io.BytesIO()
    out = _TarOut(buf, 1_700_000_000)
    for lo in range(0, table.num_rows, step):
        slots = member_columns(table.slice(lo, step), policy)
        assert slots is not None
        out.add_columns(slots)
    out.close()
    return buf.getvalue()


_TEXT = ["a caption", "", None, "déjà vu \u6f22\u5b57", "x" * 700, "tab\tand\nnewline", "\0nul"]


@pytest.mark.parametrize("kind", ["text", "image", "video", "long-keys", "all-empty", "large-media"])
def test_column_members_are_the_row_members_byte_for_byte(kind):
    """The shard writer's columnar path (headers built as arrays) writes exactly the bytes of the row path:
    same members, same order, same json, same pax fallback for names past 100 characters."""
    n = len(_TEXT)
    cols = {"key": [f"k{i}" for i in range(n)], "uid": [f"u{i}" for i in range(n)], "text": _TEXT,
            "status": ["ok"] * n, "shard": ["000000"] * n, "score": [0.5, float("nan"), None, 1.0, float("inf"), 2.0, 3.0],
            "lang": ["en", None, "fr", "\u6f22", "de", "en", ""], "row": list(range(n))}
    if kind == "image":
        cols["image"] = [b"\xff\xd8" + bytes([i]) * (i * 300) for i in range(n - 1)] + [None]
        cols["image_format"] = ["jpg", None, "", "png", "webp", "jpg", "gif"]
    if kind == "large-media":  # past 16 MiB of payload in one batch: copied member by member
        cols["image"] = [bytes([i]) * (6_000_000 + i) if i % 3 else None for i in range(n)]
        cols["image_format"] = ["png"] * n
    if kind == "video":
        cols["video"] = [None, b"\0\0\0\x18ftypmp4" * 5000] + [b"v%d" % i for i in range(n - 2)]
        cols["video_format"] = [None] * n
    if kind == "long-keys":
        cols["key"] = ["y" * 97, "z" * 120, "k2", "h0123456789abcdef01234567", "a" * 95, "b" * 96, "c"]
    if kind == "all-empty":
        cols["text"] = [None] * n
    t = pa.table(cols)
    assert _columns_tar(t) == _rows_tar(t)
    assert _columns_tar(t, step=n) == _rows_tar(t)
    with tarfile.open(fileobj=io.BytesIO(_columns_tar(t))) as tar:
        media = sum(v is not None for v in cols.get("image", cols.get("video", [])))
        assert len(tar.getnames()) == 2 * n + media


def test_caption_columns_and_documents_take_the_row_path():
    base = {"key": ["a"], "text": ["t"]}
    assert member_columns(pa.table(base)) is not None
    for extra in ({"recaption": ["syn"]}, {"fused_caption": [None]}, {"caption_kept": ["original"]},
                  {"doc_image_bytes": [[b"x"]]}):
        assert member_columns(pa.table({**base, **extra})) is None, extra
    assert member_columns(pa.table({"key": [None], "text": ["t"]})) is None


def test_keys_of_a_column_are_key_for_of_each_uid():
    uids = ["3ffd15d56cade49f2ce2", "img.001", "a/b", "h0123456789abcdef01234567", "h0123456789abcdef0123456",
            "x" * 120, "x" * 121, "ü", "", "ok_-9", "line\\n", "end\n"]
    got = keys_for(pa.chunked_array([uids[:5], uids[5:]])).to_pylist()
    assert got == [key_for(u) for u in uids]
    assert got[0] == uids[0] and got[1] != uids[1] and got[3] != uids[3] and got[4] == uids[4]
    assert keys_for(pa.array(["a", "b"])).to_pylist() == ["a", "b"]
