"""`curate demo --modality video` end to end: generate, serve on loopback, run pipelines/video_text.yaml on
the session's Ray, then check every video and every clip against the planted ground truth, that the
counts reconcile, and that the shards decode with webdataset + PyAV (the example loader)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.demo.video import VIDEO_OUTCOME, corpus_rows, truth_table
from curate.demo.video_run import DEMO_VIDEOS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def video_demo(ray_address, tmp_path_factory):
    import os

    from tests.conftest import curate_cli

    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("video-demo") / "out"
    proc = curate_cli("demo", "--modality", "video", "--output", str(out), env={"CURATE_CACHE": str(cache)},
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    corpus = next((cache / "demo").glob("video-text-*"))
    assert os.path.exists(corpus / "corpus.json")
    return out, corpus, proc.stdout


def test_ground_truth_videos_and_clips(video_demo):
    out, corpus, stdout = video_demo
    videos, clips = truth_table(out, corpus)
    assert {r["noise"] for r in videos} == set(VIDEO_OUTCOME)
    for r in videos + clips:
        assert r["as_expected"] == r["rows"], r
    assert "ground truth: clips" in stdout and "derived" in stdout


def test_counts_reconcile(video_demo):
    out, corpus, _ = video_demo
    meta = pq.ParquetDataset(str(out / "meta")).read().to_pylist()
    truth = json.loads((corpus / "corpus.json").read_text())
    videos = [r for r in meta if r["parent_uid"] is None]
    clips = [r for r in meta if r["parent_uid"] is not None]
    assert len(videos) == len(truth) == json.loads((out / "manifest.json").read_text())["input"]["rows"]
    assert len(truth) == corpus_rows(DEMO_VIDEOS)  # what the demo says it makes
    split = {r["uid"] for r in videos if r["reason"] == "split_into_clips"}
    # videos in = videos split into clips + videos dropped/failed (with a reason each)
    assert all(r["status"] != "ok" and r["reason"] for r in videos)
    # every clip belongs to a split video, and every split video has clips
    assert {c["parent_uid"] for c in clips} == split
    kept = [c for c in clips if c["status"] == "ok"]
    assert len(kept) == sum(json.loads((out / "sizes.json").read_text()).values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["derived"] == len(clips) and manifest["counts"]["kept"] == len(kept)


def test_shards_decode_with_webdataset_and_pyav(video_demo):
    out, _, _ = video_demo
    spec = importlib.util.spec_from_file_location("video_loader", REPO / "examples" / "video_loader.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    samples = list(loader.make_dataset(shards, frames=4, size=32))
    assert samples
    for video, text, meta in samples:
        assert tuple(video.shape) == (4, 3, 32, 32) and 0 <= float(video.min()) <= float(video.max()) <= 1
        assert text and meta["end"] > meta["start"] and meta["parent_uid"]
        assert video.std() > 0  # real pictures, not blank frames


def test_validate_accepts_video_run(video_demo, cli_inprocess):
    out, _, _ = video_demo
    res = cli_inprocess("validate", str(out))
    assert res.returncode == 0, res.stderr
    # the query docs/video.md shows (its doc-test names this test)
    res = cli_inprocess("query", str(out), 'SELECT parent_uid, start, "end", text, motion FROM kept ORDER BY parent_uid, start',
                        "--format", "csv")
    assert res.returncode == 0 and res.stdout.startswith("parent_uid,start,end,text,motion"), res.stderr


def test_n_is_answered_with_what_the_video_demo_makes(tmp_path, cli_inprocess):
    # the video corpus is fixed (distinct motions per clean video, one video per planted fault): -n 40 made
    # 20 videos without a word. The output here is not the demo's, so the demo stops right after the note.
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's")
    res = cli_inprocess("demo", "--modality", "video", "-n", "40", "--output", str(out))
    note = [ln for ln in res.stderr.splitlines() if ln.startswith("note:")]
    assert res.returncode == 2 and len(note) == 1, res.stderr
    total = corpus_rows(DEMO_VIDEOS)
    assert "-n 40" in note[0] and f"fixed {total} videos ({DEMO_VIDEOS} clean" in note[0], note[0]
    assert (out / "notes.txt").exists()
