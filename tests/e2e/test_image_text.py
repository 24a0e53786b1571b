"""The image-text spine end to end: real loopback HTTP, local Ray, real tars, DuckDB, ground truth."""
from __future__ import annotations

import json
import tarfile

import pyarrow.dataset as pads
import pytest
import yaml

from curate.demo.run import truth_table
from curate.validate import validate


def meta_rows(out):
    return pads.dataset(str(out / "meta"), format="parquet").to_table().to_pylist()


@pytest.fixture(scope="module")
def demo_run(main_run):
    """The README's main job on the 300-row demo (conftest.main_run, shared with the doc-tests): the recipe's
    own settings, so one part and one shard (test_faults covers many parts, with resume and retries)."""
    out = main_run / "out"
    return out, json.loads((out / "manifest.json").read_text())


def parts_of(out) -> int:
    """Input parts of a 300-row run: one per output.samples_per_shard rows (as the saved recipe says)."""
    per = yaml.safe_load((out / "recipe.yaml").read_text())["output"]["samples_per_shard"]
    return -(-300 // per)


def test_every_input_row_is_accounted_for(demo_run):
    out, manifest = demo_run
    rows = meta_rows(out)
    assert len(rows) == 300 == manifest["input"]["rows"] == manifest["counts"]["rows"]
    assert len({r["uid"] for r in rows}) == 300
    assert all(r["status"] in ("ok", "dropped", "failed") for r in rows)
    assert all(r["reason"] for r in rows if r["status"] != "ok")
    assert all(r["reason"] is None and r["shard"] and r["key"] for r in rows if r["status"] == "ok")
    kept = sum(1 for r in rows if r["status"] == "ok")
    assert kept == manifest["counts"]["kept"]
    assert sorted(manifest["parts"]) == [str(k) for k in range(parts_of(out))]


def test_funnel_matches_ground_truth(demo_run, demo_corpus):
    out, _ = demo_run
    table = {r["noise"]: r for r in truth_table(out, demo_corpus)}
    for kind in ("http_404", "http_500", "corrupt_bytes", "truncated_bytes", "tiny_image", "extreme_aspect",
                 "boilerplate_caption", "timeout", "flaky", "exact_duplicate", "slow_ok", "clean"):
        assert kind in table, kind
    for kind, r in table.items():
        assert r["as_expected"] == r["rows"], (kind, r)
    rows = {r["id"]: r for r in meta_rows(out)}
    truth = pads.dataset(str(demo_corpus / "corpus.parquet")).to_table().to_pylist()
    for t in truth:
        if t["noise"] == "http_404":
            assert (rows[t["id"]]["status"], rows[t["id"]]["reason"]) == ("failed", "download_http_404")
    # every planted exact duplicate group keeps exactly one member
    dups = [r for r in rows.values() if r["reason"] == "duplicate_image"]
    assert dups and all(rows_by_uid_status(rows, d["dup_of"]) == "ok" for d in dups)


def rows_by_uid_status(rows, uid):
    return next(r["status"] for r in rows.values() if r["uid"] == uid)


def test_shards_match_metadata(demo_run):
    out, _ = demo_run
    problems, stats = validate(out)
    assert problems == []
    assert stats["kept"] > 150 and stats["members"] == 3 * stats["kept"]
    kept = {r["uid"]: r for r in meta_rows(out) if r["status"] == "ok"}
    seen = set()
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                key, ext = m.name.split(".", 1)
                if ext == "json":
                    info = json.loads(tf.extractfile(m).read())
                    assert info["uid"] == key and key in kept and key not in seen
                    assert info["sha256"] == kept[key]["sha256"]
                    seen.add(key)
    assert seen == set(kept)
    assert (out / "recipe.yaml").exists() and not (out / "_work").exists()


def test_query_inspect_validate_cli(demo_run, cli_inprocess):
    """The commands through their entry point in this process (test_faults runs the console script itself)."""
    out, manifest = demo_run

    def cli(*args, check=False):
        res = cli_inprocess(*args)
        assert not check or res.returncode == 0, (args, res.stdout, res.stderr)
        return res

    proc = cli("query", str(out), "SELECT status, count(*) AS n FROM samples GROUP BY status ORDER BY status",
               "--format", "json", check=True)
    got = {r["status"]: r["n"] for r in json.loads(proc.stdout)}
    assert got["ok"] == manifest["counts"]["kept"] and sum(got.values()) == 300
    proc = cli("query", str(out), "SELECT sum(samples) AS s, count(*) AS n FROM shards", "--format", "csv", check=True)
    assert proc.stdout.splitlines()[1] == f"{manifest['counts']['kept']},{len(list((out / 'shards').glob('*.tar')))}"
    proc = cli("query", str(out), "SELECT reason, count(*) FROM dropped GROUP BY reason", check=True)
    assert "duplicate_image" in proc.stdout
    uid = next(r["uid"] for r in meta_rows(out) if r["reason"] == "download_http_404")
    proc = cli("inspect", str(out), "--uid", uid, check=True)
    assert "download_http_404" in proc.stdout and uid in proc.stdout
    proc = cli("inspect", str(out), "--where", "reason = 'image_too_small'", "--format", "json", check=True)
    assert all(r["reason"] == "image_too_small" for r in json.loads(proc.stdout))
    assert cli("validate", str(out), check=True).stdout.startswith("ok:")
    bad = cli("query", str(out), "SELECT nope FROM samples")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "query failed" in bad.stderr


def test_validate_catches_tampering(demo_run, tmp_path):
    import shutil

    out, _ = demo_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tar = sorted((copy / "shards").glob("*.tar"))[0]
    with tarfile.open(tar) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf]
    with tarfile.open(tar, "w") as tf:  # corrupt one image, drop one sample's txt
        import io

        corrupted = dropped = False
        for m, data in members:
            if m.name.endswith(".jpg") and not corrupted:
                data, corrupted = b"not a jpeg", True
                m.size = len(data)
            elif m.name.endswith(".txt") and not dropped:
                dropped = True
                continue
            tf.addfile(m, io.BytesIO(data))
    problems, _ = validate(copy)
    assert any("does not decode" in p for p in problems)
    assert any("no .txt member" in p for p in problems)


def test_clusters_command(demo_run, cli_inprocess):
    out, _ = demo_run
    res = cli_inprocess("clusters", str(out), "--column", "dup_of", "--format", "json")
    assert res.returncode == 0, res.stderr
    clusters = json.loads(res.stdout)
    assert clusters and all(c["size"] >= 2 and c["kept"] == 1 for c in clusters)
    members = cli_inprocess("clusters", str(out), "--column", "dup_of", "--cluster", clusters[0]["cluster"], "--format", "json")
    rows = json.loads(members.stdout)
    assert len(rows) == clusters[0]["size"] and rows[0]["status"] == "ok"
    assert {r["reason"] for r in rows[1:]} <= {"duplicate_image", "near_duplicate_image"}  # dup_of: exact and perceptual
    assert cli_inprocess("clusters", str(out), "--column", "text").returncode == 2
    # the default is a column the run has (not minhash_cluster, which the image recipe lacks): no Binder Error
    from curate.cli import _cluster_columns

    have = _cluster_columns(str(out))
    assert "minhash_cluster" not in have and have[-1] == "dup_of"
    default = cli_inprocess("clusters", str(out), "--format", "json")
    first = cli_inprocess("clusters", str(out), "--column", have[0], "--format", "json")
    assert default.returncode == 0 and json.loads(default.stdout) == json.loads(first.stdout)
    res = cli_inprocess("clusters", str(out), "--column", "minhash_cluster")
    assert res.returncode == 2 and "this run has no such column; it has" in res.stderr


def test_demo_command(ray_address, tmp_path, monkeypatch, cli_inprocess):
    """`curate demo`: generates, serves, curates, prints the funnel and the ground truth, writes the report."""
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo-out"
    res = cli_inprocess("demo", "--samples", "200", "--output", str(out), "--no-clip-filter")
    assert res.returncode == 0, res.stderr
    assert "funnel" in res.stdout and "ground truth" in res.stdout and "download_http_404" in res.stdout
    assert validate(out)[0] == []
    assert "Ground truth (demo)" in (out / "report.html").read_text()
    # a second demo replaces the first; anything else in the folder is refused
    assert cli_inprocess("demo", "--samples", "200", "--output", str(out), "--no-clip-filter").returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    res = cli_inprocess("demo", "--samples", "200", "--output", str(other), "--no-clip-filter")
    assert res.returncode == 2 and (other / "keep.txt").exists()


def test_report_shows_dropped_images_and_duplicates(demo_run):
    """The run's own report: thumbs/ holds a bounded sample of the dropped rows (each a real thumbnail of
    a row meta/ says was dropped, by that stage and reason), every dropping stage gets a grid of them, and
    duplicates appear beside their kept keeper."""
    import io
    import re

    from PIL import Image

    out, _ = demo_run
    rows = {r["uid"]: r for r in meta_rows(out)}
    thumbs = pads.dataset(str(out / "thumbs"), format="parquet").to_table().to_pylist()
    per_group: dict = {}
    for t in thumbs:
        r = rows[t["uid"]]
        assert (r["status"], r["stage"], r["reason"], r["dup_of"]) == ("dropped", t["stage"], t["reason"], t["dup_of"])
        assert max(Image.open(io.BytesIO(t["thumb"])).size) <= 160
        key = (r["part"], r["stage"], r["reason"])
        per_group[key] = per_group.get(key, 0) + 1
    assert max(per_group.values()) <= 24  # output.dropped_thumbnails per part, stage and reason
    dropping = {r["stage"] for r in rows.values() if r["status"] == "dropped"}
    assert dropping >= {"image_size", "caption_text", "exact_dedup"} and {t["stage"] for t in thumbs} == dropping
    page = (out / "report.html").read_text()
    grids = dict(re.findall(r'<h3 class="dropped-stage" data-stage="([^"]+)">.*?</h3>(<div class="grid">.*?)'
                            r'(?=<h3|</section>)', page))
    assert set(grids) == dropping and all('class="thumb"' in g for g in grids.values())
    sets = re.findall(r'<div class="dupset">(.*?)(?=<div class="dupset">|<h\d|<p|</section>)', page)
    assert any('tile keeper"><img' in s and 'tile copy"><img' in s and "(ok)" in s for s in sets)
