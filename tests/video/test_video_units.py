"""Video stages on real files and a real loopback server: fetch limits, probe reason codes, splitting,
cutting (remux and re-encode), clip rows and their accounting, keyframe dedup and scoring."""
from __future__ import annotations

import functools
import json

import numpy as np
import pyarrow as pa
import pytest

from curate import schema
from curate.stage import run_job_local, run_local
from curate.video import split, synth
from curate.video.clip_split import ClipSplit
from curate.video.dedup import ClipDedup
from curate.video.download import DownloadVideo
from curate.video.fetch import FetchError, fetch
from curate.video.probe import probe

TWO_SCENES = [synth.Scene("square", "red", "right", "black", 2.0), synth.Scene("circle", "blue", "up", "grey", 2.0)]


@pytest.fixture(scope="module")
def video():
    return synth.scenes_video(TWO_SCENES, fps=10, size=64, seed=1)


def _table(urls, texts=None, **extra):
    n = len(urls)
    cols = {"uid": [f"u{i}" for i in range(n)], "url": urls, "text": texts or [f"text {i}" for i in range(n)],
            "status": ["ok"] * n, "row": list(range(n)), "part": [0] * n, **extra}
    return pa.table(cols)


def _run(steps, table):
    cols = {}
    for s in steps:
        cols.update(s.writes)
    return run_local(steps, table, schema.run_schema(cols))


def test_h264_encoder_available():
    # PyPI's av wheels bundle FFmpeg with libx264; without it clips fall back to MPEG-4 part 2
    assert synth.encoder_name() in ("libx264", "h264")


def test_probe_reason_codes(video):
    assert probe(video).reason is None and probe(video).duration == pytest.approx(4.0)
    assert probe(b"").reason == "video_empty"
    assert probe(video[: len(video) // 2]).reason == "video_truncated"
    assert probe(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()).reason == "video_decode_error"
    assert probe(synth.audio_only()).reason == "video_no_video_stream"


def test_images_and_tars_are_not_videos(tmp_path):
    """A tar of JPEGs renamed fake.mp4 was probed as a 25 fps 64x64 mjpeg video (FFmpeg finds the JPEGs in
    it) and ended as dropped/clip_split/no_clips; a lone JPEG probed as jpeg_pipe. Both fail at probe."""
    import io
    import tarfile

    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, "JPEG")
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        for k in range(3):
            info = tarfile.TarInfo(f"{k}.jpg")
            info.size = len(jpeg.getvalue())
            t.addfile(info, io.BytesIO(jpeg.getvalue()))
    tar_bytes = tar.getvalue()
    got = probe(tar_bytes)
    assert (got.reason, got.error) == ("video_decode_error", "a tar archive, not a video container")
    got = probe(tar_bytes[512:])  # the JPEGs without the tar header: FFmpeg's raw mjpeg demuxer
    assert got.reason == "video_decode_error" and "still images (mjpeg)" in got.error
    got = probe(jpeg.getvalue())
    assert got.reason == "video_decode_error" and "still images (jpeg_pipe)" in got.error
    (tmp_path / "fake.mp4").write_bytes(tar_bytes)
    out = _run([DownloadVideo(), ClipSplit()], _table([str(tmp_path / "fake.mp4")]))
    assert [(r["status"], r["stage"], r["reason"]) for r in out.to_pylist()] == [
        ("failed", "download_video", "video_decode_error")]


def test_fetch_limits_on_loopback(video_server, video_corpus, tmp_path):
    base = video_server.url
    kw = dict(timeout_s=5, max_bytes=1 << 20, max_seconds=20)
    with pytest.raises(FetchError) as e:  # an endless stream stops at max_bytes, not at memory exhaustion
        fetch(f"{base}/endless/live.mp4", **kw)
    assert e.value.reason == "video_too_large" and e.value.dropped
    with pytest.raises(FetchError) as e:
        fetch(f"{base}/img/videos/page.html", **kw)
    assert e.value.reason == "video_content_type"
    with pytest.raises(FetchError) as e:
        fetch(f"{base}/status/404/x.mp4", **kw)
    assert e.value.reason == "download_http_404"
    with pytest.raises(FetchError) as e:
        fetch(f"{base}/status/503/x.mp4", retries=1, **kw)
    assert e.value.reason == "download_http_503"
    # a flaky server answers after a retry
    assert fetch(f"{base}/flaky/1/img/videos/v000.mp4", retries=1, **kw)[4:8] == b"ftyp"
    local = video_corpus / "files" / "videos" / "v000.mp4"
    assert fetch(str(local), **kw) == local.read_bytes() == fetch(f"file://{local}", **kw)
    with pytest.raises(FetchError) as e:
        fetch(str(local), timeout_s=5, max_bytes=1024, max_seconds=5)
    assert e.value.reason == "video_too_large"


def test_scene_split_copies_and_takes_subtitle_text(tmp_path, video):
    (tmp_path / "a.mp4").write_bytes(video)
    vtt = "WEBVTT\n\n00:00.000 --> 00:02.000\nred square right\n\n00:02.000 --> 00:04.000\nblue circle up\n"
    t = _table([str(tmp_path / "a.mp4"), str(tmp_path / "a.mp4")], subs=[vtt, None])
    out = _run([DownloadVideo(subtitles_col="subs"), ClipSplit(keyframe_size=64, keyframes_per_clip=3)], t)
    assert out.slice(0, 2).column("uid").to_pylist() == ["u0", "u1"]  # input rows first, in order
    assert out.slice(0, 2).column("reason").to_pylist() == ["split_into_clips"] * 2
    assert out.slice(0, 2).column("video").null_count == 2  # the parents' bytes are released
    clips = out.slice(2).to_pylist()
    assert [(c["uid"], c["parent_uid"], c["start"], c["end"]) for c in clips] == [
        ("u0-0-2000", "u0", 0.0, 2.0), ("u0-2000-4000", "u0", 2.0, 4.0),
        ("u1-0-2000", "u1", 0.0, 2.0), ("u1-2000-4000", "u1", 2.0, 4.0)]
    assert [c["text"] for c in clips] == ["red square right", "blue circle up", "text 1", "text 1"]
    assert [c["text_source"] for c in clips] == ["subtitles", "subtitles", "video", "video"]
    assert all(c["cut"] == "copy" and c["status"] == "ok" and len(c["keyframes"]) == 3 for c in clips)
    for c in clips:  # every clip is a playable 2 s video
        p = probe(c["video"])
        assert p.reason is None and p.duration == pytest.approx(2.0, abs=0.11)
    assert schema.input_rows(out) == 2


def test_backwards_cue_is_skipped_and_does_not_wipe_clip_text(tmp_path, video):
    """A cue that ends before it starts was stored as a cue: it overlapped no clip, so every clip got empty
    text (dropped caption_empty although the row has a caption). It is skipped and counted in
    cues_skipped; a sidecar left without cues leaves the clips the video's caption."""
    (tmp_path / "a.mp4").write_bytes(video)
    backwards = "WEBVTT\n\n00:00:05.000 --> 00:00:01.000\nbackwards\n"
    mixed = backwards + "\n00:00.000 --> 00:02.000\nred square right\n\n00:02.000 --> 00:04.000\nblue circle up\n"
    t = _table([str(tmp_path / "a.mp4")] * 2, subs=[backwards, mixed])
    out = _run([DownloadVideo(subtitles_col="subs"), ClipSplit(keyframe_size=64)], t)
    parents = out.slice(0, 2).to_pylist()
    assert [(p["reason"], p["cues_skipped"], p["cues"]) for p in parents] == [
        ("split_into_clips", 1, []), ("split_into_clips", 1, [{"start": 0.0, "end": 2.0, "text": "red square right"},
                                                             {"start": 2.0, "end": 4.0, "text": "blue circle up"}])]
    clips = out.slice(2).to_pylist()
    assert [(c["text"], c["text_source"]) for c in clips] == [
        ("text 0", "video"), ("text 0", "video"), ("red square right", "subtitles"), ("blue circle up", "subtitles")]


def test_fixed_windows_off_keyframes_are_reencoded(video):
    sc = split.scan(video, sample_every_s=0.25, keyframe_size=64)
    spans = split.boundaries(sc, mode="fixed", clip_s=1.5, min_clip_s=1.0, max_clip_s=10, scene_threshold=0.12)
    assert spans == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.0)]
    assert [split.can_copy(sc, s) for s in spans] == [False, False, True]
    data = split.reencode(video, spans[1], sc.fps, synth.encoder_name())
    p = probe(data)
    assert p.codec == "h264" and p.duration == pytest.approx(1.5, abs=0.11)


def test_bad_videos_become_rows_not_crashes(tmp_path, video):
    files = {"empty.mp4": b"", "trunc.mp4": video[:1000], "audio.m4a": synth.audio_only(),
             "huge.mp4": synth.encode([np.zeros((16, 2048, 3), np.uint8)] * 2, 10),
             "short.mp4": synth.scenes_video([synth.Scene("square", "red", "left", "black", 0.5)])}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    urls = [str(tmp_path / n) for n in files] + ["ftp://example.org/x.mp4", str(tmp_path / "missing.mp4"), "", None]
    out = _run([DownloadVideo(max_side=1920), ClipSplit()], _table(urls))
    got = [(r["status"], r["reason"]) for r in out.to_pylist()]
    assert got == [("failed", "video_empty"), ("failed", "video_truncated"), ("dropped", "video_no_video_stream"),
                   ("dropped", "video_resolution_too_large"), ("dropped", "no_clips")] + [
                   ("failed", "download_invalid_url")] * 4
    # an empty or null URL says so (read as a local path it was "no such file: .")
    assert out.column("error").to_pylist()[-2:] == ["empty URL: ''", "the row has no URL (null)"]


def test_runner_rejects_derived_rows_without_parent():
    from curate.runner import _check_derived

    part = pa.table({"uid": ["a", "b"], schema.PARENT_COLUMN: pa.array([None, None], pa.string())})
    ok = pa.concat_tables([part, pa.table({"uid": ["a-0-1"], schema.PARENT_COLUMN: ["a"]})])
    _check_derived(ClipSplit(), part, ok)
    for bad in (pa.concat_tables([part, pa.table({"uid": ["x"], schema.PARENT_COLUMN: pa.array([None], pa.string())})]),
                pa.concat_tables([part, pa.table({"uid": ["x"], schema.PARENT_COLUMN: ["zzz"]})]),
                part.slice(1)):
        with pytest.raises(RuntimeError):
            _check_derived(ClipSplit(), part, bad)


def test_clip_dedup_finds_rescaled_reupload(video):
    other = synth.scenes_video([synth.Scene("circle", "green", "down", "beige", 2.0, lane=0.25, size="large")], seed=2)
    frames = []
    for data in (video, synth.rescale(video, 96, 10), other):
        sc = split.scan(data, sample_every_s=0.25, keyframe_size=224)
        frames.append(split.describe(sc, (0.0, 2.0), 3).keyframes)
    t = pa.table({"uid": ["a", "b", "c"], "part": pa.array([0, 0, 0], pa.int32()), "status": ["ok"] * 3,
                  "keyframes": pa.array(frames, pa.list_(pa.binary()))})
    d = run_job_local(ClipDedup(max_distance=10), t)
    by = {r["uid"]: r for r in d.to_pylist()}
    assert by["b"]["status"] == "dropped" and by["b"]["dup_of"] == "a" and by["a"]["status"] == "ok"
    assert "c" not in by or by["c"]["status"] == "ok"


def test_keyframe_clip_score_with_tiny_model(video):
    from curate.video.score import KeyframeClipScore, KeyframeClipThreshold

    sc = split.scan(video, sample_every_s=0.25, keyframe_size=64)
    kf = split.describe(sc, (0.0, 2.0), 3).keyframes
    t = pa.table({"uid": ["a", "b", "c"], "text": ["a red square", "a blue circle", "x"], "status": ["ok", "ok", "dropped"],
                  "keyframes": pa.array([kf, kf[:1], kf], pa.list_(pa.binary()))})
    out = _run([KeyframeClipScore(model="curate-tiny", random_init=True, device="cpu"), KeyframeClipThreshold(min_score=1.0)], t)
    mean, low = out.column("keyframe_clip_score").to_pylist(), out.column("keyframe_clip_score_min").to_pylist()
    assert mean[2] is None and -1 <= low[0] <= mean[0] <= 1 and low[1] == pytest.approx(mean[1])
    assert out.column("reason").to_pylist()[:2] == ["keyframe_clip_score_below_threshold"] * 2


def test_held_keyframe_frames_are_bounded_and_pick_the_same(video):
    """Keyframe candidates are held as decoded frames and only picked ones become JPEGs; a tiny hold budget
    (about 8 frames of 64x64: settling finished spans; or none: encoding every candidate at once) must pick
    exactly what an unbounded one picks."""
    how = dict(mode="fixed", clip_s=1.0, min_clip_s=0.5, max_clip_s=10, scene_threshold=0.12)
    plan = functools.partial(split.settled, **how)
    got = []
    for kw in (dict(hold_mb=1e6), dict(hold_mb=0.1, plan=plan, n_keyframes=2), dict(hold_mb=1e-3)):
        sc = split.scan(video, sample_every_s=0.2, keyframe_size=64, **kw)
        spans = split.boundaries(sc, **how)
        got.append([split.describe(sc, s, 2).keyframes for s in spans])
        if "plan" in kw:  # settling released the frames no span picks
            assert any(p is None for _, p in sc.candidates)
    assert got[0] == got[1] == got[2] and len(got[0]) == 4 and all(len(k) == 2 for k in got[0])
    assert all(k[:2] == b"\xff\xd8" for kf in got[0] for k in kf)


@pytest.mark.parametrize("module", ["av", "webvtt"])
def test_missing_video_extra_fails_before_the_run(monkeypatch, tmp_path, capsys, module):
    """PyAV and webvtt-py are installed here, so their absence is mocked: a None entry in sys.modules makes
    `import av` raise ImportError exactly as on a machine without the extra."""
    import sys

    import pyarrow.parquet as pq

    from curate.recipe import RecipeError, load_recipe
    from tests.conftest import curate_inprocess

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(RecipeError, match=r"download_video needs .*pip install 'curate\[video\]'"):
        load_recipe("video_text", input_path="x.parquet", output_path=str(tmp_path / "o"))
    pq_path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/x.mp4"], "caption": ["a"]}), pq_path)
    r = curate_inprocess("run", "video_text", "-i", str(pq_path), "-o", str(tmp_path / "out"), capsys=capsys)
    assert r.returncode != 0 and "pip install 'curate[video]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # failed before the run started: nothing written
