"""The corpus of the video data-quality proof (examples/video_experiment.py): raw uploads with the noise the
video stages remove, and a held-out labelled split of clean clips to evaluate the trained models on.

The raw corpus is DESIGNED for `clip_split` + `clip_motion` + `clip_dedup`; the proof shows those stages do
what they were built for on noise planted for them, not that they help on real web video. Kinds of upload:
- `single`: one 3 s scene of a shape moving over a background; its caption says what moves where;
- `two_scene`: two 2 s scenes (a dark then a light background, or the reverse) in one upload; the upload's
  caption is both scenes' captions joined by ", then " and its WebVTT subtitles time each scene's caption,
  so the raw sample pairs a mixed picture with a long caption and the clips pair each scene with its own;
- `static`: a frozen upload: the first frame of a moving scene held for 3 s (plus sensor noise) while the
  caption still says the shape moves (a title card or a broken encode);
- `duplicate`: re-uploads of a few popular `single`/`two_scene` videos, alternately byte-exact and rescaled
  to 96x96 and re-encoded, each with its source's caption.

The eval (and validation) split: single-scene 3 s clips of fresh random draws (their own random stream),
never static or duplicated, written as WebDataset tars of `<key>.mp4`, `.txt` and `.json` with the labels
(direction, colour, shape, size, background) and a classes.json whose main task is the motion direction and
whose attribute tasks are the rest, each with prompt templates in the captions' own wording.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from curate.video import synth

FPS, SIZE = 10, 64
MIX = {"single": 0.35, "two_scene": 0.20, "static": 0.20, "duplicate": 0.25}
POPULAR = 0.1  # duplicates copy the first 10% of the clean uploads
DIRS = ("left", "right", "up", "down")
EVAL_STREAM, VALID_STREAM = 404, 505  # the training corpus draws from stream 0: other streams, other draws
TASKS = {"direction": DIRS, "colour": tuple(synth.COLOURS),
         "shape": synth.SHAPES, "size": tuple(synth.SIZES), "background": tuple(synth.BACKGROUNDS)}


def random_scene(rng: np.random.Generator, seconds: float, background: str | None = None) -> synth.Scene:
    """A moving shape with every attribute drawn uniformly."""
    return synth.Scene(shape=str(rng.choice(synth.SHAPES)), colour=str(rng.choice(list(synth.COLOURS))),
                       direction=str(rng.choice(DIRS)), seconds=seconds,
                       background=background or str(rng.choice(list(synth.BACKGROUNDS))),
                       lane=float(rng.choice(synth.LANES)), size=str(rng.choice(list(synth.SIZES))))


def _vtt(scenes: list[synth.Scene]) -> str:
    lines, t = ["WEBVTT", ""], 0.0
    for sc in scenes:
        lines += [f"00:00:{t:06.3f} --> 00:00:{t + sc.seconds:06.3f}", sc.caption(), ""]
        t += sc.seconds
    return "\n".join(lines)


def _frozen(scene: synth.Scene, seed: int) -> bytes:
    """The scene's first frame held for its length, with the renderer's sensor noise."""
    rng = np.random.default_rng(seed)
    n = int(round(scene.seconds * FPS))
    first = synth.frame_of(scene, 0, n, SIZE)
    frames = (np.clip(first.astype(np.int16) + rng.integers(-2, 3, first.shape), 0, 255).astype(np.uint8)
              for _ in range(n))
    return synth.encode(frames, FPS, gop=FPS)


def kinds(videos: int, seed: int) -> list[str]:
    """The kind of every upload, in a seeded shuffled order with exactly round(MIX * videos) of each."""
    counts = {k: int(round(f * videos)) for k, f in MIX.items()}
    counts["single"] += videos - sum(counts.values())
    out = [k for k, n in counts.items() for _ in range(n)]
    order = np.random.default_rng([seed, 11]).permutation(len(out))
    return [out[i] for i in order]


def generate(root: Path, videos: int = 600, seed: int = 0) -> Path:
    """Write root/files/videos/* and root/corpus.json (one row per upload, curate.demo.video's format)."""
    root = Path(root)
    files = root / "files" / "videos"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    plan = kinds(videos, seed)
    rows: list[dict] = []
    clean: list[int] = []
    for i, kind in enumerate(k for k in plan if k != "duplicate"):
        name = f"v{i:04d}"
        if kind == "two_scene":
            dark, light = str(rng.choice(["black", "navy"])), str(rng.choice(["grey", "beige"]))
            bgs = [dark, light] if rng.random() < 0.5 else [light, dark]
            scenes = [random_scene(rng, 2.0, bg) for bg in bgs]
        else:
            scenes = [random_scene(rng, 3.0)]
        data = _frozen(scenes[0], seed * 100003 + i) if kind == "static" else synth.scenes_video(
            scenes, FPS, SIZE, seed=seed * 100003 + i)
        (files / f"{name}.mp4").write_bytes(data)
        (files / f"{name}.vtt").write_text(_vtt(scenes))
        if kind != "static":
            clean.append(len(rows))
        rows.append({"id": len(rows), "noise": kind, "path": f"videos/{name}.mp4", "vtt": f"videos/{name}.vtt",
                     "caption": ", then ".join(sc.caption() for sc in scenes),
                     "scenes": [sc.caption() for sc in scenes], "dup_of": None, "clips": []})
    popular = clean[:max(1, int(round(POPULAR * len(clean))))]
    for j in range(plan.count("duplicate")):
        src = rows[popular[j % len(popular)]]
        data = (root / "files" / src["path"]).read_bytes()
        name = f"d{j:04d}.mp4"
        (files / name).write_bytes(data if j % 2 == 0 else synth.rescale(data, 96, FPS))
        rows.append({**src, "id": len(rows), "noise": "duplicate", "path": f"videos/{name}", "dup_of": src["id"]})
    (root / "corpus.json").write_text(json.dumps(rows, indent=1))
    return root


def _templates(task: str, rng: np.random.Generator, n: int = 16) -> list[str]:
    """Prompt templates for one task: captions of random scenes with the task's word left as `{}`."""
    out: list[str] = []
    for _ in range(4 * n):
        sc = random_scene(rng, 3.0)
        if task == "direction":  # the lane phrase depends on the direction: stop right after it
            t = f"a {sc.size} {sc.colour} {sc.shape} moves {{}}"
        else:
            setattr(sc, task, "{}")
            t = sc.caption()
        if t not in out:
            out.append(t)
        if len(out) == n:
            break
    return out


def classes(seed: int = 0) -> dict:
    """classes.json: direction is the main zero-shot task, the other attributes are attribute tasks."""
    rng = np.random.default_rng([seed, 77])
    main = "direction"
    return {"classnames": list(TASKS[main]), "templates": _templates(main, rng), "task": main,
            "attributes": [{"name": t, "values": list(v), "classnames": list(v), "templates": _templates(t, rng)}
                           for t, v in TASKS.items() if t != main]}


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tf.addfile(info, io.BytesIO(data))


def write_split(out: Path, n: int, seed: int, stream: int, per_tar: int = 200) -> Path:
    """n labelled clean clips into out/NNNNNN.tar plus out/classes.json (deterministic in seed, stream)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, stream])
    tf = None
    for i in range(n):
        if i % per_tar == 0:
            if tf is not None:
                tf.close()
            tf = tarfile.open(out / f"{i // per_tar:06d}.tar", "w", format=tarfile.USTAR_FORMAT)
        sc = random_scene(rng, 3.0)
        key = f"{stream:03d}{i:06d}"
        _add(tf, f"{key}.mp4", synth.scenes_video([sc], FPS, SIZE, seed=stream * 1000003 + i))
        _add(tf, f"{key}.txt", sc.caption().encode())
        label = {"label": sc.direction, "direction": sc.direction, "colour": sc.colour, "shape": sc.shape,
                 "size": sc.size, "background": sc.background, "lane": sc.lane}
        _add(tf, f"{key}.json", json.dumps(label).encode())
    if tf is not None:
        tf.close()
    (out / "classes.json").write_text(json.dumps(classes(seed), indent=1))
    return out


def outcomes(run_dir: Path, corpus: Path) -> dict[str, dict[str, int]]:
    """Per upload kind, how its rows ended in a curate run: {kind: {"status/reason" or "clip ok": count}}.

    Video rows and clip rows are counted apart ("video ..." / "clip ..."), so the table shows what each
    stage did to each planted kind, e.g. static uploads -> clip dropped/clip_static.
    """
    import pyarrow.parquet as pq

    kind = {r["id"]: r["noise"] for r in json.loads((Path(corpus) / "corpus.json").read_text())}
    table = pq.ParquetDataset(str(Path(run_dir) / "meta")).read()
    cols = [c for c in ("id", "parent_uid", "status", "reason") if c in table.column_names]  # no clips: no parent_uid
    out: dict[str, dict[str, int]] = {}
    for r in table.select(cols).to_pylist():
        what = ("clip " if r.get("parent_uid") is not None else "video ") + (
            "ok" if r["status"] == "ok" else f"{r['status']}/{r['reason']}")
        d = out.setdefault(kind.get(r["id"], "unknown"), {})
        d[what] = d.get(what, 0) + 1
    return out
