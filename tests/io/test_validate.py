"""`curate validate` on real run directories committed by write_part (real JPEGs, tars, meta Parquet):
how much it reads, and what it says about a damaged or stray shard. No Ray."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from PIL import Image

from curate import schema
from curate.io.manifest import Manifest, PartInfo
from curate.io.rundir import RunDir
from curate.io.shard_writer import write_part
from curate.validate import validate


def _noise_jpg(seed: int, side: int) -> bytes:
    """A JPEG of noise: it hardly compresses, so a few samples make a shard of a known, large size."""
    px = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _run(root, parts: int = 1, samples: int = 8, side: int = 64) -> RunDir:
    """A complete run of `parts` parts of `samples` kept image-text samples each, as the runner leaves it."""
    run = RunDir(root)
    run_schema = schema.run_schema({})
    for k in range(parts):
        n = samples
        table = pa.table({"uid": [f"p{k}u{i}" for i in range(n)], "row": list(range(k * n, (k + 1) * n)),
                          "part": [k] * n, "status": ["ok"] * n, "stage": [None] * n, "reason": [None] * n,
                          "text": [f"caption {i}" for i in range(n)],
                          "image": [_noise_jpg(k * n + i, side) for i in range(n)], "image_format": ["jpg"] * n,
                          "width": [side] * n, "height": [side] * n})
        write_part(run, k, schema.conform(table, run_schema), run_schema, caption_policy="original")
    run.recipe.write_text(yaml.safe_dump({"name": "t", "output": {"caption_policy": "original"}}))
    run.finalize(Manifest(input={"rows": parts * samples}, parts={k: PartInfo(rows=samples) for k in range(parts)}),
                 report=False)
    return run


def _bytes_read() -> int:
    """Bytes this process has read through read() calls so far (Linux: rchar in /proc/self/io)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/io is Linux's")
def test_validate_reads_each_shard_once(tmp_path):
    """The SHA-256 is taken from the same read that walks the tar. Before, the shard was read twice (once to
    hash it, once for its members): twice the requests and transfer on an object store."""
    run = _run(tmp_path / "run", samples=24, side=384)
    size = run.shard(0).stat().st_size
    assert size > 4 << 20  # large enough that the shard's bytes dominate what validate reads
    validate(run.root, decode=False)  # imports and first-use reads out of the way
    before = _bytes_read()
    problems, stats = validate(run.root, decode=False)
    read = _bytes_read() - before
    assert problems == [] and stats["members"] == 3 * 24
    assert size <= read < 1.25 * size, (read, size)


def test_a_truncated_shard_is_both_changed_and_unreadable(tmp_path):
    """The digest is still taken (to the end of what is there) when the tar breaks off mid-member."""
    run = _run(tmp_path / "run")
    data = run.shard(0).read_bytes()
    run.shard(0).write_bytes(data[: len(data) // 2])
    problems, _ = validate(run.root)
    assert problems[0].startswith("shards/000000.tar: its bytes changed since it was written")
    assert problems[1].startswith("shards/000000.tar: unreadable tar (")
    assert len(problems) == 2


def test_a_shard_with_an_appended_byte_is_changed_but_reads(tmp_path):
    """Bytes after the tar's end (which the tar reader never asks for) are still hashed."""
    run = _run(tmp_path / "run")
    with open(run.shard(0), "ab") as f:
        f.write(b"\0")
    problems, _ = validate(run.root)
    assert len(problems) == 1 and "its bytes changed since it was written" in problems[0]


def test_a_stray_shard_is_one_line_with_a_count_and_an_example(tmp_path, cli_inprocess):
    """A shard copied into shards/ from elsewhere: one line for it, not one per sample (it was 400 lines
    for a demo shard), and still exit 1."""
    run = _run(tmp_path / "run", samples=12)
    shutil.copy(run.shard(0), run.shards / "000007.tar")
    problems, _ = validate(run.root, decode=False)
    assert problems == ["shards/000007.tar: 12 samples have no kept metadata row (e.g. p0u0)"]
    res = cli_inprocess("validate", str(run.root))
    assert res.returncode == 1
    assert res.stderr.splitlines() == [f"1 problem(s) in {run.root}:",
                                       "  - shards/000007.tar: 12 samples have no kept metadata row (e.g. p0u0)"]


def test_a_shard_emptied_is_one_line_with_a_count_and_an_example(tmp_path):
    """A shard replaced by an empty tar (a copy that stopped at its start): one line for its 12 missing
    samples (it was one per sample), next to the changed-bytes line."""
    import tarfile

    run = _run(tmp_path / "run", samples=12)
    with tarfile.open(run.shard(0), "w"):
        pass
    problems, _ = validate(run.root, decode=False)
    assert problems[1:] == ["shards/000000.tar: 12 kept samples are missing from the tar (e.g. p0u0)"]
    assert problems[0].startswith("shards/000000.tar: its bytes changed") and len(problems) == 2


def test_meta_parts_are_checked_against_the_manifests_parts(tmp_path):
    """A manifest listing a part meta/ lacks (a refilter copied a stopped retry's batch and parts over as if
    finished) or a meta part it does not list passed validate: nothing compared the two."""
    import json

    run = _run(tmp_path / "run", parts=2, samples=4, side=32)
    assert validate(run.root)[0] == []
    manifest = json.loads(run.manifest_path.read_text())
    manifest["parts"]["7"] = {"rows": 4, "batch": 1, "kept": 4, "failed": 0, "committed": True}
    run.manifest_path.write_text(json.dumps(manifest))
    problems = validate(run.root)[0]
    assert "manifest.json lists 1 part(s) that meta/ does not hold (e.g. part-000007.parquet)" in problems
    del manifest["parts"]["1"], manifest["parts"]["7"]
    run.manifest_path.write_text(json.dumps(manifest))
    problems = validate(run.root)[0]
    assert problems == ["meta/ holds 1 part(s) that manifest.json does not list (e.g. part-000001.parquet)"]


def test_query_and_inspect_warn_and_export_refuses_when_meta_lacks_a_listed_part(tmp_path, cli_inprocess, caplog):
    """A finished run whose meta/ lost a part the manifest lists: `curate query` and `inspect` silently
    answered with fewer rows (only validate noticed). Now they answer with one warning line on stderr (they
    are how one looks at the damage), and `export`, which writes a subset others train on, refuses."""
    run = _run(tmp_path / "run", parts=2, samples=4, side=32)
    res = cli_inprocess("query", str(run.root), "SELECT count(*) AS n FROM samples", "--format", "csv")
    assert (res.returncode, res.stdout, res.stderr) == (0, "n\n8\n", "")  # a whole run: no warning
    run.meta_part(1).unlink()
    res = subprocess.run([sys.executable, "-m", "curate.cli", "query", str(run.root),  # the user's stderr
                          "SELECT count(*) AS n FROM samples", "--format", "csv"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert res.returncode == 0 and res.stdout == "n\n4\n"
    warning = (f"{run.root}: manifest.json lists 1 part(s) that meta/ does not hold (e.g. "
               f"part-000001.parquet); results may lack rows: run `curate validate {run.root}`")
    assert res.stderr.splitlines() == [f"WARNING: {warning}"]
    caplog.clear()
    res = cli_inprocess("inspect", str(run.root), "--format", "json")
    assert res.returncode == 0 and [r.getMessage() for r in caplog.records] == [warning]
    res = cli_inprocess("export", str(run.root), "--format", "uids", "-o", str(tmp_path / "uids.npy"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"error: {run.root}: manifest.json lists 1 part(s) that meta/ does not hold (e.g. "
                                  "part-000001.parquet); run `curate validate` on it; nothing was written")
    assert not (tmp_path / "uids.npy").exists()
