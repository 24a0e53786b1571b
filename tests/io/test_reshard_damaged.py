"""`reshard` of a damaged run refuses instead of passing the damage on: a shard whose bytes changed since
they were written (its new shards got fresh digests, so `curate validate` on OUT2 found nothing) and a meta
part that is gone (its rows silently left out of OUT2, whose manifest still counted them). A text-only run
(filters only: no Ray) keeps it to seconds."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.recipe import build_recipe
from curate.reshard import OutputError, reshard
from curate.runner import Runner
from curate.validate import validate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reshard_damaged")
    src = root / "in.parquet"
    pq.write_table(pa.table({"caption": [f"a caption with several words number {i}" for i in range(30)]}), src)
    recipe = build_recipe({"name": "t", "input": {"path": str(src), "url_col": None},
                           "output": {"path": str(root / "out"), "samples_per_shard": 10},
                           "stages": [{"caption_text": {}}]})
    Runner(recipe).start()
    return root / "out"


def test_a_sound_run_reshards(run, tmp_path):
    reshard(run, 7, tmp_path / "r")
    assert validate(tmp_path / "r")[0] == []


def test_a_shard_whose_bytes_changed_is_not_copied(run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    tar = damaged / "shards" / "000001.tar"
    data = bytearray(tar.read_bytes())
    at = data.index(b"several")
    data[at:at + 7] = b"SEVERAL"  # a caption edited in place: the tar still reads, the digest differs
    tar.write_bytes(bytes(data))
    with pytest.raises(OutputError, match=r"000001.tar: its bytes changed since it was written \(SHA-256 differs "
                                          r"from its meta part's\); run `curate validate` on it; nothing was written"):
        reshard(damaged, 7, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_missing_meta_part_is_refused(run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "meta" / "part-000002.parquet").unlink()
    with pytest.raises(OutputError, match=r"manifest.json lists 1 part\(s\) that meta/ does not hold \(e.g. part-000002.parquet\)"):
        reshard(damaged, 7, tmp_path / "r")
    assert not (tmp_path / "r").exists()
