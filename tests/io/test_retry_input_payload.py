"""--retry-failed of rows whose images came inside a Parquet input reads their bytes from the input again
(Runner._with_input_payload; end to end: tests/scoring_mllm/test_mllm_run.py). The input is split again
only to number its rows as the run did: no more than one of those parts may sit on disk at a time, or a
retry of a few rows of a large input wrote a whole second copy of it under _work first."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from curate.io import atomic, reader
from curate.recipe import load_recipe
from curate.runner import Runner


def test_the_failed_rows_images_come_back_one_part_on_disk_at_a_time(tmp_path, monkeypatch):
    images = [bytes([i]) * (100 + i) for i in range(23)]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"image": images, "caption": [f"c{i}" for i in range(23)]}), src)
    (tmp_path / "recipe.yaml").write_text("name: t\ninput: {format: parquet, text_col: caption}\n"
                                          "output: {samples_per_shard: 4}\nstages:\n  - load_image: {}\n")
    runner = Runner(load_recipe(str(tmp_path / "recipe.yaml"), input_path=str(src),
                                output_path=str(tmp_path / "out")))
    spec = runner.recipe.input_spec()
    reader.split_parts(spec, 4, lambda k: tmp_path / "parts" / f"part-{k:06d}.parquet")
    numbered = pa.concat_tables(pq.read_table(p, columns=["row", "uid"]) for p in sorted((tmp_path / "parts").iterdir()))
    failed = numbered.take([1, 9, 22])  # rows in the 1st, 3rd and last (short) part

    on_disk, write = [], atomic.write_parquet

    def counting(table, path, *a, **kw):  # how many of the split's parts are on disk as another is written
        on_disk.append(len(list(path.parent.glob("part-*.parquet"))) if path.parent.exists() else 0)
        return write(table, path, *a, **kw)

    monkeypatch.setattr(atomic, "write_parquet", counting)
    got = runner._with_input_payload(failed, spec, ["input_image_bytes"])
    assert got.column("input_image_bytes").to_pylist() == [images[1], images[9], images[22]]
    assert got.column("uid").to_pylist() == failed.column("uid").to_pylist()
    assert len(on_disk) == 6 and max(on_disk) <= 1, on_disk  # 23 rows in parts of 4
    assert not (runner.run.work / "retry_source").exists()
