"""Stage settings that name a local file or folder are made absolute when the recipe loads, as --output is
(curate.recipe.absolute_local_path): a relative one was resolved in each Ray worker's working directory and,
saved relative in the run's recipe.yaml, anew by a --resume from another folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curate.recipe import build_recipe

FLAKY = "tests.e2e.retry_plugin:Flaky"


def _recipe(*stages) -> dict:
    return {"name": "t", "input": {"path": "in.parquet"}, "output": {"path": "out"}, "stages": list(stages)}


def test_model_folders_and_weights_files_become_absolute_names_do_not(tmp_path, monkeypatch, tiny_ckpt):
    """A transformers model folder, a CLIP weights file, a cache folder: absolute. A hub id, an open_clip name
    or tag, an endpoint's served name, a URL: as written (they name no local file)."""
    from curate.caption.tiny import build_tiny_blip

    monkeypatch.chdir(tmp_path)
    build_tiny_blip(tmp_path / "models" / "blip")
    shutil.copy(tiny_ckpt, tmp_path / "ckpt.pt")
    rec = build_recipe(_recipe(
        {"download": {}}, {"recaption": {"backend": "transformers", "model": "./models/blip"}},
        {"clip_score": {"model": "curate-tiny", "pretrained": "ckpt.pt"}},
        {"mllm_score": {"backend": "endpoint", "model": "./served-name", "base_url": "http://127.0.0.1:9/v1",
                        "cache_dir": "cache"}},
        {"fuse_captions": {"model": "m", "base_url": "http://127.0.0.1:9/v1", "cache_dir": "../shared/cache"}},
        {"mllm_score": {"model": "org/some-vlm"}}))
    stages = [next(iter(s.values())) for s in rec.to_dict()["stages"]][1:]
    assert stages[0]["model"] == str(tmp_path / "models" / "blip")
    assert stages[1]["pretrained"] == str(tmp_path / "ckpt.pt") and stages[1]["model"] == "curate-tiny"
    assert stages[2]["model"] == "./served-name" and stages[2]["cache_dir"] == str(tmp_path / "cache")
    assert stages[3]["cache_dir"] == str(tmp_path.parent / "shared" / "cache")
    assert stages[4]["model"] == "org/some-vlm"  # a hub id (no such folder here)
    coca = build_recipe(_recipe({"download": {}}, {"recaption": {"backend": "coca", "model": "curate-tiny-coca",
                                               "checkpoint": "./ckpt.pt", "check_model": False}}))
    cfg = coca.to_dict()["stages"][1]["recaption"]
    assert cfg["checkpoint"] == str(tmp_path / "ckpt.pt") and cfg["model"] == "curate-tiny-coca"


def test_a_run_started_here_resumes_from_another_folder(tmp_path, monkeypatch, cli_inprocess):
    """Started in one folder with `entries: ./entries.txt` (a job's file) and a stage that fails to set up;
    the work before it kept. `curate run --resume -o OUT` from another folder reads the saved recipe.yaml:
    it said `./entries.txt`, which did not exist there (exit 2, 'entries ... not found'). In-process runs
    (no Ray): the same absolute path is what a Ray worker with another working directory gets."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir(), other.mkdir()
    (first / "entries.txt").write_text("red\nblue\n")
    texts = [f"a {c} box {i}" for i, c in enumerate(["red", "blue", "green"] * 4)]
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(12)], "caption": texts}), first / "in.parquet")
    (first / "r.yaml").write_text(yaml.safe_dump({
        "name": "t", "input": {"format": "parquet"}, "output": {"samples_per_shard": 4},
        "stages": [{"exact_dedup": {"by": "text"}}, {FLAKY: {"broken": True}},
                   {"metaclip_balance": {"entries": "./entries.txt", "t": 100}}]}))
    monkeypatch.chdir(first)
    res = cli_inprocess("run", "r.yaml", "-i", "in.parquet", "-o", "out")
    assert res.returncode == 2 and "cannot load weights" in res.stderr, res.stderr
    out = first / "out"
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["stages"][2]["metaclip_balance"]["entries"] == str(first / "entries.txt")

    monkeypatch.chdir(other)
    res = cli_inprocess("run", "--resume", "-o", str(out), "--set", "flaky.broken=false")
    assert res.returncode == 0, res.stderr
    meta = pa.concat_tables([pq.read_table(p) for p in sorted((out / "meta").glob("*.parquet"))]).to_pylist()
    assert len(meta) == 12  # every row accounted for
    kept = {r["text"] for r in meta if r["status"] == "ok"}
    assert kept == {t for t in texts if "green" not in t}  # the entries file was read: green matches none
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not any(other.iterdir())  # nothing written in the other folder


@pytest.mark.parametrize("value, absolute", [
    ("./m", True), ("../m", True), ("~/m", True), ("m", False), ("org/name", False), ("/abs/m", False),
    ("ckpt.pt", False), (".cache", False),
    ("s3://b/m.pt", False), ("hf-hub:org/name", False), ("", False), ("x" * 5000, False)])
def test_which_values_are_relative_local_paths(tmp_path, monkeypatch, value, absolute):
    from curate.recipe import absolute_local_path

    monkeypatch.chdir(tmp_path)
    got = absolute_local_path(value)  # a model or pretrained setting: a name unless it looks like a path
    assert (got is not None) == absolute
    if value and not value.startswith((".", "/", "~")) and ":" not in value and len(value) < 100:
        assert absolute_local_path(value, maybe_name=False) == str(tmp_path / value)  # a path-only setting
    if absolute:
        assert Path(got).is_absolute() and got == str(Path(value).expanduser().resolve())


def test_ray_workers_and_a_resume_from_another_folder_find_a_relative_checkpoint(tmp_path, monkeypatch, ray_address,
                                                                                tiny_ckpt, cli_inprocess):
    """`clip_score.checkpoint: ./ckpt.pt`, a run started in its folder that stops at a stage that fails to set
    up (tests/e2e/retry_plugin.py; the work before the job kept), then `curate run --resume -o OUT` from
    another folder. Before: the session's Ray workers, which run in the folder pytest started in, stopped
    the first run with 'checkpoint not found: ./ckpt.pt' although the driver's preflight had found it; and
    the saved recipe.yaml said `./ckpt.pt`, which the other folder does not hold."""
    import io

    from PIL import Image

    def jpeg(i: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(buf, "JPEG")
        return buf.getvalue()

    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir(), other.mkdir()
    shutil.copy(tiny_ckpt, first / "ckpt.pt")
    pq.write_table(pa.table({"image": [jpeg(i) for i in range(6)], "caption": [f"a red box {i}" for i in range(6)]}),
                   first / "in.parquet")
    (first / "r.yaml").write_text(yaml.safe_dump({"name": "t", "input": {"format": "parquet"}, "stages": [
        {"load_image": {}}, {"exact_dedup": {"by": "text"}}, {"clip_score": {"checkpoint": "./ckpt.pt"}},
        {FLAKY: {"broken": True}}]}))
    monkeypatch.chdir(first)
    res = cli_inprocess("run", "r.yaml", "-i", "in.parquet", "-o", "out")
    assert res.returncode == 2 and "flaky: cannot load weights" in res.stderr, res.stderr
    assert "checkpoint not found" not in res.stderr
    out = first / "out"
    monkeypatch.chdir(other)
    res = cli_inprocess("run", "--resume", "-o", str(out), "--set", "flaky.broken=false")
    assert res.returncode == 0, res.stderr
    meta = pq.read_table(out / "meta").to_pylist()
    assert len(meta) == 6 and all(r["status"] == "ok" and r["clip_score"] is not None for r in meta)
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["stages"][2]["clip_score"]["checkpoint"] == str(first / "ckpt.pt")
    assert not any(other.iterdir())
