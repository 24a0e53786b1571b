"""The video-text demo corpus: short synthetic videos of moving shapes whose WebVTT subtitles (or per-video
captions) say what moves where, with planted faults and a ground truth for every video and every clip.

Each clean video has two scenes of 2 s (64x64, 10 fps, H.264, a keyframe every second), on backgrounds of
very different brightness, so scene splitting must find the cut at 2.0 s and each clip's text must be its
own scene's subtitle. Planted: an exact re-upload and a resized re-encode of a clean video (their clips are
near-duplicates), a static video (its clip is static), a too-short video (no clip), a 0-byte file, random
bytes, a truncated mp4, an audio-only file, a huge resolution, a 404, an endless stream and an HTML page.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.video import synth

FPS, SIZE, SCENE_S = 10, 64, 2.0

# video-level noise kind -> (status, reason) a correct pipeline gives the video's own row
VIDEO_OUTCOME = {
    "clean": ("dropped", "split_into_clips"),
    "no_subtitles": ("dropped", "split_into_clips"),
    "exact_duplicate": ("dropped", "split_into_clips"),
    "resized_duplicate": ("dropped", "split_into_clips"),
    "static": ("dropped", "split_into_clips"),
    "too_short": ("dropped", "no_clips"),
    "empty_file": ("failed", "video_empty"),
    "corrupt": ("failed", "video_decode_error"),
    "truncated": ("failed", "video_truncated"),
    "audio_only": ("dropped", "video_no_video_stream"),
    "huge_resolution": ("dropped", "video_resolution_too_large"),
    "http_404": ("failed", "download_http_404"),
    "endless_stream": ("dropped", "video_too_large"),
    "not_video": ("dropped", "video_content_type"),
}

# one video per planted fault (generate writes them in this order, after the clean videos)
PLANTED = tuple(k for k in VIDEO_OUTCOME if k not in ("clean", "no_subtitles"))


def corpus_rows(videos: int) -> int:
    """Rows (videos) of the corpus `generate(root, videos)` writes: the clean ones plus one per planted fault."""
    return videos + len(PLANTED)


def _motions(seed: int) -> list[tuple[str, float, str]]:
    """(direction, lane, size) for every clean scene, all different, so no two clean clips look alike."""
    combos = [(d, lane, sz) for d in ("left", "right", "up", "down") for lane in synth.LANES for sz in synth.SIZES]
    order = np.random.default_rng([seed, 8]).permutation(len(combos))
    return [combos[i] for i in order]


def _scenes(rng: np.random.Generator, motions: list) -> list[synth.Scene]:
    """Two scenes: a dark background then a light one (or the reverse), so the cut is unmistakable."""
    dark, light = str(rng.choice(["black", "navy"])), str(rng.choice(["grey", "beige"]))
    out = []
    for bg in ([dark, light] if rng.random() < 0.5 else [light, dark]):
        d, lane, sz = motions.pop(0)
        out.append(synth.Scene(shape=str(rng.choice(synth.SHAPES)), colour=str(rng.choice(list(synth.COLOURS))),
                               direction=d, background=bg, seconds=SCENE_S, lane=lane, size=sz))
    return out


def _vtt(scenes: list[synth.Scene]) -> str:
    lines, t = ["WEBVTT", ""], 0.0
    for sc in scenes:
        lines += [f"00:{int(t // 60):02d}:{t % 60:06.3f} --> 00:{int((t + sc.seconds) // 60):02d}:{(t + sc.seconds) % 60:06.3f}",
                  sc.caption(), ""]
        t += sc.seconds
    return "\n".join(lines)


def generate(root: Path, videos: int = 8, seed: int = 0) -> Path:
    """Write root/files/videos/* and root/corpus.json (the ground truth); returns root."""
    root = Path(root)
    files = root / "files" / "videos"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    motions = _motions(seed)
    if 2 * videos > len(motions):
        raise ValueError(f"at most {len(motions) // 2} distinct clean videos")
    rows: list[dict] = []

    def add(kind, path, caption, vtt=None, clips=(), dup_of=None):
        rows.append({"id": len(rows), "noise": kind, "path": path, "caption": caption, "vtt": vtt,
                     "clips": list(clips), "dup_of": dup_of})

    clean_ids = []
    for v in range(videos):
        scenes = _scenes(rng, motions)
        name = f"v{v:03d}"
        (files / f"{name}.mp4").write_bytes(synth.scenes_video(scenes, FPS, SIZE, seed=seed * 1000 + v))
        whole = ", then ".join(sc.caption() for sc in scenes)
        subs = v % 4 != 3  # every fourth video has only a per-video caption
        if subs:
            (files / f"{name}.vtt").write_text(_vtt(scenes))
        clips = [{"start": i * SCENE_S, "end": (i + 1) * SCENE_S, "text": sc.caption() if subs else whole,
                  "outcome": "ok"} for i, sc in enumerate(scenes)]
        clean_ids.append(len(rows))
        add("clean" if subs else "no_subtitles", f"videos/{name}.mp4", whole, f"videos/{name}.vtt" if subs else None,
            clips)
    src = rows[clean_ids[0]]
    data0 = (root / "files" / src["path"]).read_bytes()
    (files / "reupload.mp4").write_bytes(data0)
    add("exact_duplicate", "videos/reupload.mp4", src["caption"], src["vtt"],
        [{**c, "outcome": "dropped/near_duplicate_clip"} for c in src["clips"]], dup_of=src["id"])
    # the same footage scaled to 96x96 and re-encoded at another quality: other bytes, same pictures
    src2 = rows[clean_ids[1]]
    (files / "resized.mp4").write_bytes(synth.rescale((root / "files" / src2["path"]).read_bytes(), 96, FPS))
    add("resized_duplicate", "videos/resized.mp4", src2["caption"], src2["vtt"],
        [{**c, "outcome": "dropped/near_duplicate_clip"} for c in src2["clips"]], dup_of=src2["id"])
    still = [synth.Scene("square", "white", "still", "grey", 3.0, size="large")]
    (files / "static.mp4").write_bytes(synth.scenes_video(still, FPS, SIZE, seed=seed + 99))
    add("static", "videos/static.mp4", still[0].caption(), None,
        [{"start": 0.0, "end": 3.0, "text": still[0].caption(), "outcome": "dropped/clip_static"}])
    short = [synth.Scene("circle", "red", "left", "black", 0.5)]
    (files / "short.mp4").write_bytes(synth.scenes_video(short, FPS, SIZE, seed=seed + 98))
    add("too_short", "videos/short.mp4", short[0].caption())
    (files / "empty.mp4").write_bytes(b"")
    add("empty_file", "videos/empty.mp4", "a video that is not there")
    (files / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    add("corrupt", "videos/corrupt.mp4", "random bytes named like a video")
    (files / "truncated.mp4").write_bytes(data0[: len(data0) // 2])
    add("truncated", "videos/truncated.mp4", "the first half of a video file")
    (files / "audio.m4a").write_bytes(synth.audio_only(1.0))
    add("audio_only", "videos/audio.m4a", "a tone with no picture")
    wide = [np.zeros((16, 4608, 3), np.uint8)] * 3
    (files / "huge.mp4").write_bytes(synth.encode(wide, FPS))
    add("huge_resolution", "videos/huge.mp4", "a strip wider than any screen")
    add("http_404", "status/404/img/videos/missing.mp4", "a video that was taken down")
    add("endless_stream", "endless/live.mp4", "a live stream that never ends")
    (files / "page.html").write_text("<html><body>not a video</body></html>")
    add("not_video", "videos/page.html", "a web page where a video was expected")
    if [r["noise"] for r in rows[videos:]] != list(PLANTED):
        raise RuntimeError("bug: the planted faults differ from curate.demo.video.PLANTED")
    (root / "corpus.json").write_text(json.dumps(rows, indent=1))
    return root


def url_for(base: str, path: str) -> str:
    if path.startswith(("status/", "endless/")):
        return f"{base}/{path}"
    return f"{base}/img/{path}"


def write_url_list(root: Path, base_url: str, out: Path) -> Path:
    """The input list the demo curates: url, caption, subtitles (a WebVTT URL or null), id."""
    rows = json.loads((Path(root) / "corpus.json").read_text())
    table = pa.table({
        "url": [url_for(base_url, r["path"]) for r in rows],
        "caption": [r["caption"] for r in rows],
        "subtitles": pa.array([url_for(base_url, r["vtt"]) if r["vtt"] else None for r in rows], pa.string()),
        "id": pa.array([r["id"] for r in rows], pa.int64()),
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return out


def truth_table(run_dir: Path, root: Path) -> tuple[list[dict], list[dict]]:
    """(per video noise kind, per expected clip outcome): rows, as expected, outcomes seen.

    A clip is as expected when a clip row of its video covers the same span (within a frame), carries the
    expected text, and ends as expected. Duplicated clips are judged as a group (the original's clip and
    its copies'): exactly one is kept and the others point at it with dup_of, whichever uid comes first.
    """
    from collections import Counter

    truth = json.loads((Path(root) / "corpus.json").read_text())
    meta = pq.ParquetDataset(str(Path(run_dir) / "meta")).read().to_pylist()
    videos = {r["id"]: r for r in meta if r.get("parent_uid") is None}
    clips: dict[int, list[dict]] = {}
    for r in meta:
        if r.get("parent_uid") is not None:
            clips.setdefault(r["id"], []).append(r)

    def outcome(r):
        return "missing" if r is None else (r["status"] if r["status"] == "ok" else f"{r['status']}/{r['reason']}")

    def find(vid, c):
        for r in clips.get(vid, []):
            if abs(r["start"] - c["start"]) < 0.5 / FPS and abs(r["end"] - c["end"]) < 0.5 / FPS:
                return r
        return None

    dup_sources = {(t["dup_of"], k) for t in truth if t["dup_of"] is not None for k in range(len(t["clips"]))}
    vrows: dict[str, dict] = {}
    crows: dict[str, dict] = {}
    for t in truth:
        status, reason = VIDEO_OUTCOME[t["noise"]]
        got = videos.get(t["id"])
        v = vrows.setdefault(t["noise"], {"noise": t["noise"], "expected": f"{status}/{reason}", "rows": 0,
                                          "as_expected": 0, "outcomes": Counter()})
        v["rows"] += 1
        v["outcomes"][outcome(got)] += 1
        v["as_expected"] += int(got is not None and got["status"] == status and got["reason"] == reason)
        for k, c in enumerate(t["clips"]):
            got_c = find(t["id"], c)
            kind = c["outcome"]
            row = crows.setdefault(f"{t['noise']} clip", {"noise": f"{t['noise']} clip", "expected": kind, "rows": 0,
                                                          "as_expected": 0, "outcomes": Counter()})
            row["rows"] += 1
            row["outcomes"][outcome(got_c)] += 1
            good = got_c is not None and got_c["text"] == c["text"]
            if kind == "dropped/near_duplicate_clip" or (t["id"], k) in dup_sources:
                # judged as a group: the original's clip and its copies' clips, exactly one of them kept
                src = t["dup_of"] if t["dup_of"] is not None else t["id"]
                members = [find(src, truth[src]["clips"][k])] + [
                    find(u["id"], u["clips"][k]) for u in truth if u["dup_of"] == src]
                kept = [x for x in members if x is not None and x["status"] == "ok"]
                good = good and None not in members and len(kept) == 1 and all(
                    x["reason"] == "near_duplicate_clip" and x["dup_of"] == kept[0]["uid"]
                    for x in members if x is not kept[0])
            else:
                good = good and outcome(got_c) == kind
            row["as_expected"] += int(good)
    order = list(VIDEO_OUTCOME)
    return (sorted(vrows.values(), key=lambda r: order.index(r["noise"])),
            sorted(crows.values(), key=lambda r: r["noise"]))
