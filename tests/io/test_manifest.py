"""The typed manifest, the one owner of a sample's tar members, and resuming runs written by older versions.

All on real files: real JPEGs, a real part committed by write_part (tar + meta Parquet), real manifest.json
and recipe.yaml; no Ray (a complete run's --resume returns before Ray starts).
"""
from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pytest
import yaml
from PIL import Image

from curate import schema
from curate.io.manifest import Counts, Manifest, ManifestError, PartInfo
from curate.io.members import CAPTION_POLICIES, sample_members, table_members, text_members
from curate.io.rundir import RunDir
from curate.io.shard_writer import write_part
from curate.recipe import build_recipe
from curate.runner import Runner, RunError
from curate.validate import validate

# a manifest as the dict-era runner wrote it, plus a key no version of curate knows
OLD = {"format": 1, "status": "complete", "name": "old", "created": "2026-01-01T00:00:00+0000",
       "updated": "2026-01-01T00:01:00+0000", "versions": {"python": "3.11", "curate": "0.1.0"},
       "input": {"path": "/data/urls.parquet", "files": 1, "bytes": 1234, "mtime_ns": 5, "rows": 4},
       "named_files": {}, "batches": [{"kind": "run", "status": "complete", "parts": [0, 1], "rows": 4}],
       "parts": {"0": {"rows": 2, "batch": 0, "kept": 1, "failed": 0, "committed": True},
                 "1": {"rows": 2, "batch": 0, "kept": 2, "failed": 1, "committed": True}},
       "timings": {"split": 0.1, "segment0": 2.0}, "jobs": {"job0:exact_dedup": {"decisions": 1}},
       "extra_columns": {"lang": "string"}, "extra_schema": "QUJD",
       "counts": {"rows": 4, "kept": 3, "dropped": {"exact_dedup/duplicate": 1}, "failed": {}},
       "from_the_future": {"kept": "as is"}}


def test_an_old_manifest_loads_typed_and_round_trips_byte_for_byte_in_shape(tmp_path):
    run = RunDir(tmp_path)
    run.manifest_path.write_text(json.dumps(OLD))
    m = run.load_manifest()
    assert m.complete and m.parts[1] == PartInfo(rows=2, batch=0, kept=2, failed=1, committed=True)
    assert m.counts.dropped == {"exact_dedup/duplicate": 1} and m.input.rows == 4 and m.next_part() == 2
    assert m["counts"]["kept"] == 3 and m.get("note", "none") == "none"  # read-only dict-era access
    run.save_manifest(m)
    again = json.loads(run.manifest_path.read_text())
    assert again.pop("updated") != OLD["updated"]
    assert again == {k: v for k, v in OLD.items() if k != "updated"}  # unknown key kept, no nulls added


@pytest.mark.parametrize("text, why", [("{", "not valid JSON"), ("[1]", "not a curate manifest"),
                                       ('{"parts": {"x": {"rows": 1}}}', "parts.x"),
                                       ('{"counts": {"rows": "many"}}', "counts.rows")])
def test_a_broken_manifest_is_one_line_naming_the_file(tmp_path, text, why):
    run = RunDir(tmp_path)
    run.manifest_path.write_text(text)
    with pytest.raises(ManifestError, match=why) as err:
        run.load_manifest()
    assert str(run.manifest_path) in str(err.value) and "\n" not in str(err.value)
    problems, _ = validate(tmp_path)
    assert problems == [str(err.value)]


def test_a_typo_in_a_known_field_is_an_error_not_a_silent_none():
    m = Manifest()
    with pytest.raises(ValueError):
        m.status = None
    with pytest.raises(KeyError):
        m["cuonts"]


# -- one owner of the tar members ----------------------------------------------------------------------------

def _jpg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20 + i, 10), (40 * i % 255, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


# original text, synthetic caption, fused caption: every fallback of every policy is hit by some row
CAPTIONS = [("a dog", "a brown dog on grass", "a brown dog on the grass"),
            ("a cat", "a cat on a sofa", None),
            ("", "a red car", None),
            ("a tree", None, None),
            ("", None, "a fused boat")]


def _commit_run(root, policy: str) -> RunDir:
    """A complete run directory as the runner leaves it: one part written by write_part, its recipe and manifest."""
    run = RunDir(root)
    cols = {"recaption": pa.string(), "fused_caption": pa.string()}
    run_schema = schema.run_schema(cols)
    n = len(CAPTIONS) + 1
    table = pa.table({"uid": [f"u{i}" for i in range(n)], "row": list(range(n)), "part": [0] * n,
                      "status": ["ok"] * (n - 1) + ["dropped"], "stage": [None] * (n - 1) + ["image_size"],
                      "reason": [None] * (n - 1) + ["too_small"],
                      "text": [c[0] for c in CAPTIONS] + ["gone"], "recaption": [c[1] for c in CAPTIONS] + [None],
                      "fused_caption": [c[2] for c in CAPTIONS] + [None],
                      "image": [_jpg(i) for i in range(n)], "image_format": ["jpg"] * n,
                      "width": [20 + i for i in range(n)], "height": [10] * n})
    summary = write_part(run, 0, schema.conform(table, run_schema), run_schema, caption_policy=policy)
    assert summary["kept"] == summary["images"] == n - 1  # the dropped row's image is not in the shard
    text_only = write_part(RunDir(root.parent / f"text-{policy}"), 0, schema.conform(table.drop(["image"]), run_schema),
                           run_schema, caption_policy=policy)
    assert text_only["kept"] == n - 1 and text_only["images"] == 0
    run.recipe.write_text(yaml.safe_dump({"name": "t", "output": {"caption_policy": policy}}))
    run.finalize(Manifest(input={"rows": n}, parts={0: PartInfo(rows=n)}), report=False)
    return run


def _rewrite_member(tar_path, name: str, data: bytes) -> None:
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for m, old in members:
            new = data if m.name == name else old
            m.size = len(new)
            tar.addfile(m, io.BytesIO(new))


@pytest.mark.parametrize("policy", CAPTION_POLICIES)
def test_validate_agrees_with_the_writer_under_each_policy_and_catches_a_tampered_txt(tmp_path, policy):
    run = _commit_run(tmp_path / "run", policy)
    problems, stats = validate(run.root)
    assert problems == [] and stats["kept"] == len(CAPTIONS) and stats["rows"] == len(CAPTIONS) + 1
    assert run.load_manifest().counts == Counts(rows=6, kept=5, dropped={"image_size/too_small": 1})
    assert json.loads(run.sizes.read_text()) == {"000000.tar": 5}
    _rewrite_member(run.shard(0), "u1.txt", b"a cat on a sofa, tampered")
    problems, _ = validate(run.root)
    col = "recaption" if policy == "recaption" else "text"  # u1 has no fused caption: fuse writes its text
    assert problems == ["shards/000000.tar: its bytes changed since it was written (SHA-256 differs from the one its "
                        "meta part recorded: bit rot, a partial copy or an edit)",
                        f"shards/000000.tar/u1: .txt differs from meta {col} (caption_policy {policy})"]
    if policy == "both":
        _rewrite_member(run.shard(0), "u0.recap.txt", b"another caption")
        assert "shards/000000.tar/u0: .recap.txt differs from meta recaption (caption_policy both)" in validate(run.root)[0]


def test_validate_reads_the_policy_from_the_runs_recipe(tmp_path):
    """A tar written under `recaption` does not pass as `original`: the policy validate checks is the run's."""
    run = _commit_run(tmp_path / "run", "recaption")
    run.recipe.write_text(yaml.safe_dump({"name": "t", "output": {"caption_policy": "original"}}))
    problems, _ = validate(run.root)
    assert any(p.startswith("shards/000000.tar/u0: .txt differs") for p in problems)
    assert any("caption_source 'recaption', caption_policy original says 'original'" in p for p in problems)
    run.recipe.write_text(yaml.safe_dump({"name": "t", "output": {"caption_policy": "both"}}))
    assert "shards/000000.tar/u1: no .recap.txt member" in validate(run.root)[0]


def test_text_members_follow_each_policy():
    row = {"key": "k", "text": "", "recaption": "syn", "fused_caption": None, "image": b"x", "image_format": "png"}
    assert text_members(row, "original") == {"txt": ""}
    assert text_members(row, "recaption") == {"txt": "syn"}
    assert text_members(row, "both") == {"txt": "", "recap.txt": "syn"}
    assert text_members(row, "fuse") == {"txt": "syn"}  # no fused caption, empty original: the synthetic one
    names = [n for n, _ in sample_members(row, "both")]
    assert names == ["k.png", "k.txt", "k.recap.txt", "k.json"]
    with pytest.raises(ValueError, match="caption_policy"):
        text_members(row, "fuse2")


@pytest.mark.parametrize("policy", CAPTION_POLICIES)
def test_table_members_are_sample_members_of_each_row_and_the_json_has_no_nan(policy):
    """The shard writer's whole-table path and the per-row path are one decision: same members, same bytes."""
    t = pa.table({"key": ["a", "b", "c"], "uid": ["a", "b", "c"], "text": ["one", "", None],
                  "recaption": ["syn a", None, "syn c"], "fused_caption": [None, "fused b", None],
                  "image": [b"\xff\xd8a", None, b"\x89PNGc"], "image_format": ["jpg", None, "png"],
                  "clip_score": [0.25, float("nan"), float("inf")], "status": ["ok"] * 3, "shard": ["s"] * 3,
                  "lang": ["en", None, "\u6f22\u5b57"], "blob": [b"raw", None, None],
                  "doc_images": [None, None, None]})
    rows = t.to_pylist()
    assert list(table_members(t, policy, step=2)) == [sample_members(r, policy) for r in rows]
    info = json.loads(dict(sample_members(rows[1], policy))["b.json"])
    assert info["clip_score"] is None and "status" not in info and "shard" not in info and "image" not in info
    assert json.loads(dict(sample_members(rows[0], policy))["a.json"])["blob"] is None
    assert json.loads(dict(sample_members(rows[2], policy))["c.json"])["lang"] == "\u6f22\u5b57"


# -- resuming a run written before a setting existed ----------------------------------------------------------

def _finished_run(tmp_path, **output) -> tuple[dict, RunDir]:
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a\n")
    data = {"name": "t", "input": {"path": str(urls)}, "output": {"path": str(tmp_path / "out"), **output},
            "stages": [{"download": {}}, {"image_size": {"min_side": 8}}]}
    recipe = build_recipe(data)
    run = RunDir(tmp_path / "out")
    run.root.mkdir()
    saved = recipe.to_dict()
    del saved["input"]["image_col"]  # as written by a version from before input.image_col
    del saved["stages"][1]["image_size"]["max_side"]  # and a stage setting added since
    run.recipe.write_text(yaml.safe_dump(saved, sort_keys=False))
    from curate.io import reader

    run.save_manifest(Manifest(status="complete", input=reader.fingerprint(urls), named_files={},
                               counts=Counts(rows=1)))
    return data, run


def test_resume_accepts_a_saved_recipe_from_before_new_settings_and_refuses_a_changed_one(tmp_path):
    data, run = _finished_run(tmp_path)
    assert Runner(build_recipe(data)).start(resume=True).counts.rows == 1  # complete: returns before Ray
    data["stages"][1]["image_size"]["min_side"] = 9
    with pytest.raises(RunError, match="the recipe differs from the one this run started with"):
        Runner(build_recipe(data)).start(resume=True)
    saved = yaml.safe_load(run.recipe.read_text())
    saved["stages"][1]["image_size"]["retired_setting"] = 1  # a setting this version no longer has
    run.recipe.write_text(yaml.safe_dump(saved))
    with pytest.raises(RunError, match="cannot be read by this version .*retired_setting"):
        Runner(build_recipe({**data, "stages": [{"download": {}}, {"image_size": {"min_side": 8}}]})).start(resume=True)


def test_resume_of_a_run_from_before_random_init_takes_the_opt_in_and_refuses_new_weights(tmp_path, tiny_ckpt):
    """clip_score once scored with random weights when given a model name alone, and saved no random_init.
    Such a run reads back as the random_init: true it ran with, so a resume given `--set
    clip_score.random_init=true` (what the load-time refusal asks for) finishes it; weights given now are a
    changed setting of a stage rows went through, refused as any other."""
    data, run = _finished_run(tmp_path)
    data["stages"] = [{"download": {}}, {"clip_score": {"model": "curate-tiny", "random_init": True}}]
    saved = build_recipe(data).to_dict()
    del saved["stages"][1]["clip_score"]["random_init"]  # as the version before random_init wrote it
    run.recipe.write_text(yaml.safe_dump(saved, sort_keys=False))
    assert Runner(build_recipe(data)).start(resume=True).counts.rows == 1  # complete: returns before Ray
    data["stages"][1] = {"clip_score": {"checkpoint": str(tiny_ckpt)}}
    with pytest.raises(RunError, match="differs .*clip_score.*rows already went through clip_score"):
        Runner(build_recipe(data)).start(resume=True)
