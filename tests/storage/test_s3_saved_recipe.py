"""`curate run --resume -o s3://...` and `curate run --retry-failed s3://...` without a recipe read the run's
saved recipe.yaml from the object store: what curate prints after a Ctrl-C (`finish it with: curate run
--resume -o s3://bkt/runs/r2`) must work as printed. The saved-recipe lookup used to treat the URL as a
local path ("no recipe file 's3://.../recipe.yaml'") though the object was there.

A real run on the moto server (tests/storage/conftest.py), small enough to run in this process without
Ray: a two-row URL list through one model-free filter."""
from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import curate_inprocess

RECIPE = "name: s3-saved\ninput: {url_col: url, text_col: caption}\nstages:\n  - caption_text: {min_words: 2}\n"
NO_RAY = {"RAY_ADDRESS": ""}  # a run this small runs in this process (runner: in_process_max_rows)


def test_resume_and_retry_failed_without_a_recipe_read_the_saved_one_on_s3(tmp_path, bucket, capsys):
    urls = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg", "http://127.0.0.1:9/b.jpg"],
                             "caption": ["a red circle on grass", "x"]}), urls)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = f"s3://{bucket}/runs/r2"
    res = curate_inprocess("run", recipe, "-i", urls, "-o", out, capsys=capsys, env=NO_RAY)
    assert res.returncode == 0, res.stderr
    recipe.unlink()  # what is resumed is the run's own saved recipe, not a file next to the test
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert fs.exists(f"{bucket}/runs/r2/recipe.yaml")
    for args in (("--resume", "-o", out), ("--retry-failed", out)):
        res = curate_inprocess("run", *args, capsys=capsys, env=NO_RAY)
        assert res.returncode == 0, (args, res.stderr)
        assert "Traceback" not in res.stderr and "no recipe file" not in res.stderr
        assert f"run directory: {out}" in res.stdout
    manifest = json.loads(fs.cat_file(f"{bucket}/runs/r2/manifest.json"))
    assert manifest["status"] == "complete" and manifest["counts"]["rows"] == 2 and manifest["counts"]["kept"] == 1
    # an s3 output without a run is still one line, exit 2
    res = curate_inprocess("run", "--resume", "-o", f"s3://{bucket}/runs/none", capsys=capsys, env=NO_RAY)
    assert res.returncode == 2 and "nothing to resume" in res.stderr and "Traceback" not in res.stderr
