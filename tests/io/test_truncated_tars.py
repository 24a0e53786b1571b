"""Tars cut short are noticed by every reader, through the one owner of the end-of-archive check
(curate/io/tars.py): WebDataset input fails the cut sample and one row for the unknown rest as
input_truncated_tar; storage.open_tar (export, refilter, an experiment's subsets) raises TruncatedTar.

Before, Python's tarfile ended quietly where a file ended at a member boundary or inside a header, so a
cut tar read as a shorter one: its tail's samples were gone without a word. Real tars, cut as an
interrupted copy cuts them: at a member boundary, inside a header, inside a member's data, a .tar.gz cut;
locally and from a loopback http server without Range support."""
from __future__ import annotations

import gzip
import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.io import storage, tars, wds_input
from tests.io.test_fetch_cache_http import _write, server  # noqa: F401 - the loopback http server fixture


def _tar(keys=("a", "b", "c")) -> tuple[bytes, list[tarfile.TarInfo]]:
    """A WebDataset tar (an image and a caption per key) and its members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, k in enumerate(keys):
            for ext, data in (("jpg", bytes([i + 1]) * 700), ("txt", f"caption {k}".encode())):
                info = tarfile.TarInfo(f"{k}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return data, tar.getmembers()


DATA, MEMBERS = _tar()
LAST_TXT = MEMBERS[-1]  # c.txt: a cut before it leaves c's image without its caption
CUTS = {"at a member boundary": LAST_TXT.offset, "inside a header": LAST_TXT.offset + 100,
        "inside a member's data": LAST_TXT.offset_data + 3}


@pytest.mark.parametrize("where", list(CUTS))
def test_webdataset_input_fails_the_cut_sample_and_the_rest(tmp_path, where):
    """Cut at a boundary, c's image was indexed as a whole sample with no caption and the run read the
    tar as two and a half samples, silently. Now a and b are read, c fails, and a row stands for the rest."""
    path = tmp_path / "s.tar"
    path.write_bytes(DATA[:CUTS[where]])
    rows = {r["input_key"]: r for r in wds_input.index_tar(str(path))}
    assert set(rows) == {"a", "b", "c", "s.tar#truncated"}
    assert rows["a"]["_reason"] is None and rows["b"]["_reason"] is None and rows["b"]["input_length"] == 700
    for key in ("c", "s.tar#truncated"):
        assert rows[key]["_reason"] == "input_truncated_tar", rows[key]
        assert f"truncated tar {path}: after 5 member(s) (the last 'c.jpg')" in rows[key]["_error"] \
            or "(the last 'c.txt') its data ends inside that member" in rows[key]["_error"]
    assert rows["c"]["input_member"] is None  # nothing of it is loaded


def test_webdataset_input_of_a_whole_tar_and_a_cut_tar_gz(tmp_path):
    whole = tmp_path / "whole.tar"
    whole.write_bytes(DATA)
    assert [r["_reason"] for r in wds_input.index_tar(str(whole))] == [None] * 3
    minimal = tmp_path / "minimal.tar"  # one end block, no record padding (a minimal writer's): whole
    minimal.write_bytes(DATA[:LAST_TXT.offset_data + 512 + 512])
    assert [r["_reason"] for r in wds_input.index_tar(str(minimal))] == [None] * 3
    gz = tmp_path / "s.tar.gz"
    gz.write_bytes(gzip.compress(DATA[:LAST_TXT.offset]))  # a whole gzip stream of a tar cut at a boundary
    rows = wds_input.index_tar(str(gz))
    assert [r["_reason"] for r in rows] == [None, None, "input_truncated_tar", "input_truncated_tar"]
    packed = gzip.compress(DATA)
    gz.write_bytes(packed[:len(packed) - 30])  # the gzip stream itself cut short
    rows = wds_input.index_tar(str(gz))
    assert rows[-1]["_reason"] == "input_truncated_tar" and rows[-1]["input_key"] == "s.tar.gz#truncated"


def _walk(path) -> int:
    """Members read through storage.open_tar, each member's data read as export and refilter read it."""
    with storage.open_tar(path) as tar:
        return sum(1 for m in tar if tar.extractfile(m).read() is not None)


@pytest.mark.parametrize("where", list(CUTS))
def test_open_tar_refuses_a_cut_tar(tmp_path, where):
    path = tmp_path / "s.tar"
    path.write_bytes(DATA[:CUTS[where]])
    with pytest.raises(tars.TruncatedTar, match=rf"^truncated tar {path}: after \d member\(s\) .* copy it again"):
        _walk(path)
    path.write_bytes(gzip.compress(DATA[:CUTS[where]]))
    with pytest.raises(tars.TruncatedTar, match="truncated tar"):
        _walk(path)


def test_open_tar_reads_a_whole_tar_and_stays_quiet_when_the_caller_stops_early(tmp_path):
    path = tmp_path / "s.tar"
    path.write_bytes(DATA)
    assert _walk(path) == 6
    path.write_bytes(DATA[:LAST_TXT.offset_data + 1024])  # one end block and no padding: whole
    assert _walk(path) == 6
    path.write_bytes(DATA[:LAST_TXT.offset])
    with storage.open_tar(path) as tar:  # holds_video reads the first headers only: it claims no end
        assert next(iter(tar)).name == "a.jpg"


def test_http_tar_without_range_support_is_streamed_and_a_cut_one_refused(server):  # noqa: F811
    """A versioned (Last-Modified) http tar from a server that answers no Range: open_tar failed with
    "Cannot seek streaming HTTP file"; it is now read in one GET, and a cut one is refused like a local one.
    WebDataset input of the cut tar from the same server fails its rows as input_truncated_tar."""
    handler, base = server
    handler.mode, handler.ranges = "last-modified", False
    _write(handler, "/whole.tar", DATA, 1_700_000_000)
    _write(handler, "/cut.tar", DATA[:LAST_TXT.offset], 1_700_000_000)
    assert _walk(f"{base}/whole.tar") == 6
    with pytest.raises(tars.TruncatedTar, match=rf"truncated tar {base}/cut.tar: after 5 member\(s\)"):
        _walk(f"{base}/cut.tar")
    rows = wds_input.index_tar(f"{base}/cut.tar")
    assert [r["_reason"] for r in rows] == [None, None, "input_truncated_tar", "input_truncated_tar"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished text-only run (no Ray: seconds) with two shards of six samples."""
    from curate.recipe import build_recipe
    from curate.runner import Runner

    root = tmp_path_factory.mktemp("truncated_run")
    src = root / "in.parquet"
    pq.write_table(pa.table({"caption": [f"a caption with several words number {i}" for i in range(12)]}), src)
    Runner(build_recipe({"name": "t", "input": {"path": str(src), "url_col": None},
                         "output": {"path": str(root / "out"), "samples_per_shard": 6},
                         "stages": [{"caption_text": {}}]})).start()
    return root / "out"


def _cut_copy(run, dst, digest: bool = True):
    """A copy of `run` whose shard 000001.tar is cut at its last member's header (a partial copy); without
    `digest`, its meta part records no shard digest (a run from before digests)."""
    import shutil

    from curate.io import checksums

    shutil.copytree(run, dst)
    tar = dst / "shards" / "000001.tar"
    with tarfile.open(tar) as tf:
        at = tf.getmembers()[-1].offset
    tar.write_bytes(tar.read_bytes()[:at])
    if not digest:
        part = dst / "meta" / "part-000001.parquet"
        pq.write_table(checksums.with_shard_sha256(pq.read_table(part), None), part)
    return dst


def test_subsets_and_refilter_refuse_a_truncated_shard(run, tmp_path):
    """An experiment's usable_keys counted a cut shard's first samples and drew a subset from them;
    refilter copied what it could read into OUT2 under a fresh digest. Both now refuse, naming the file."""
    from curate.refilter import RefilterError, refilter
    from curate.train.data import TruncatedShard
    from curate.train.subsets import usable_keys

    shard = tmp_path / "000000.tar"
    shard.write_bytes(DATA[:LAST_TXT.offset])
    with pytest.raises(TruncatedShard, match="000000.tar"):
        usable_keys([str(shard)])

    damaged = _cut_copy(run, tmp_path / "damaged")
    with pytest.raises(RefilterError, match=r"truncated tar \S*000001.tar: .* nothing was written"):
        refilter(damaged, "true", tmp_path / "out2", report=False)
    assert not (tmp_path / "out2").exists()


def test_validate_and_reshard_name_a_truncated_shard_without_a_digest_too(run, tmp_path):
    """validate caught a cut shard by its digest (and the kept rows it lacks); a run from before digests
    had only the missing rows, and reshard copied a shard cut inside its last sample. Both name the cut."""
    from curate.reshard import OutputError, reshard
    from curate.validate import validate

    for digest in (True, False):
        damaged = _cut_copy(run, tmp_path / f"damaged-{digest}", digest=digest)
        problems = validate(damaged, decode=False)[0]
        assert any("shards/000001.tar: unreadable tar (truncated tar" in p for p in problems), problems
        with pytest.raises(OutputError, match="000001.tar"):
            reshard(damaged, 7, tmp_path / f"r-{digest}")
        assert not (tmp_path / f"r-{digest}").exists()
    damaged = _cut_copy(run, tmp_path / "damaged-nodigest", digest=False)
    with pytest.raises(OutputError, match=r"truncated tar \S*000001.tar: after \d+ member\(s\)"):
        reshard(damaged, 7, tmp_path / "r")


def test_a_job_reading_an_earlier_batchs_cut_shard_is_refused(tmp_path):
    """A job over an earlier batch's kept rows (a --retry-failed dedup) reads their image bytes back from
    the committed shard: from a cut one, the tail's rows came back with no image, silently."""
    from curate.runner import _payload_from_shard

    path = tmp_path / "000000.tar"
    path.write_bytes(DATA)
    rows = pa.table({"key": ["a", "c"], "image_format": ["jpg", "jpg"]})
    assert _payload_from_shard(path, rows, "image").to_pylist() == [b"\x01" * 700, b"\x03" * 700]
    path.write_bytes(DATA[:LAST_TXT.offset])
    with pytest.raises(tars.TruncatedTar, match="000000.tar"):
        _payload_from_shard(path, rows, "image")


def test_export_reads_a_whole_shard_and_refuses_a_cut_one(tmp_path):
    """`curate export --format parquet` reads kept rows' images from their shard: from a cut one, the
    tail's rows were exported with a null image."""
    from curate.export import _members

    path = tmp_path / "000000.tar"
    path.write_bytes(DATA)
    rows = pa.table({"key": ["a", "c"], "image_format": ["jpg", "jpg"]})
    assert [v["path"] for v in _members(path, rows)[0].to_pylist()] == ["a.jpg", "c.jpg"]
    path.write_bytes(DATA[:LAST_TXT.offset])
    with pytest.raises(tars.TruncatedTar, match="000000.tar"):
        _members(path, rows)


def test_a_tar_cut_inside_its_end_of_archive_block_is_whole(tmp_path):
    """A copy cut after the last member, inside the zero block that ends the archive, lost no member: its
    samples are all read, and no reader refuses it (a partial zero block is not the start of a header,
    whose first byte is a member name's). Before, it read as 'ends inside a tar header'."""
    path = tmp_path / "s.tar"
    path.write_bytes(DATA[:LAST_TXT.offset_data + 512 + 100])  # c.txt's data block, then 100 zero bytes
    assert [r["_reason"] for r in wds_input.index_tar(str(path))] == [None] * 3
    assert _walk(path) == 6
    assert tars.end_problem(bytes(100)) is None and tars.end_problem(b"c.txt" + bytes(95)) is not None
