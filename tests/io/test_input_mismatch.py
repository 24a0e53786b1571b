"""An input that does not fit the recipe is refused in one line naming the fix (exit 2) before any work:
image bytes given to a recipe that downloads by URL, a URL column with no URL, image bytes under a column
name curate does not guess, a Parquet file given as WebDataset input. Each of these used to run and fail
every row (exit 3), or fold the whole file into one input_tar_error row."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.io.test_inputs import jpeg

WDS_RECIPE = "name: r\ninput: {format: webdataset}\nstages: [load_image: {}]\n"


@pytest.fixture
def refused(cli_inprocess, tmp_path):
    def run(recipe, table: pa.Table, *words, args=()):
        path = tmp_path / "in.parquet"
        pq.write_table(table, path)
        r = cli_inprocess("run", recipe, "-i", path, "-o", tmp_path / "out", *args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
        for word in words:
            assert word in lines[0], lines[0]
        assert not (tmp_path / "out").exists()
        return lines[0]
    return run


def _images(n=3):
    return [jpeg((i * 40, 10, 90)) for i in range(n)]


def test_image_bytes_given_to_a_download_recipe(refused):
    table = pa.table({"jpg": _images(), "caption": ["a red thing", "a blue thing", "a green thing"]})
    refused("image_text", table, "no column 'url'", "load_image", "input.image_col", "'jpg'")
    with_null_urls = table.append_column("url", pa.nulls(3, pa.string()))  # a column, but no URL in it
    refused("image_text", with_null_urls, "every value is null", "load_image", "input.image_col")


def test_a_url_column_without_any_url(refused):
    table = pa.table({"url": pa.nulls(3, pa.string()), "caption": ["a", "b", "c"]})
    refused("image_text", table, "every value is null", "input.url_col")
    refused("image_text", table, "input.url_col is null", "nothing to download", args=("--set", "input.url_col=null"))


def test_image_bytes_under_an_unguessed_name_point_to_image_col(refused):
    table = pa.table({"photo": _images(), "caption": ["a", "b", "c"]})
    refused("image_text", table, "no column 'url'", "input.image_col: photo", "load_image")


def test_a_parquet_file_given_as_webdataset(refused, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(WDS_RECIPE)
    refused(recipe, pa.table({"jpg": _images(), "caption": ["a", "b", "c"]}),
            "is a Parquet file, not a WebDataset tar", "--set input.format=parquet")
