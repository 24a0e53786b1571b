"""Correct pixels or a failure, and bounded decoding, through the real download stage on a loopback server.

Each image is built in tests/hostile/pixel_cases.py with the pixels a correct decoder must give computed
from the source arrays with numpy; the download stage fetches it over HTTP (127.0.0.1), stores it as PNG
without resizing, and the stored pixels are compared with those. Bombs run in a subprocess so its peak RSS
is the decode's, not pytest's.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate import images
from curate.download.image import Download
from . import pixel_cases

REPO = Path(__file__).resolve().parents[2]
RSS_LIMIT_MB = 400  # the worker's own imports are ~200 MB; one 8000x8000 RGBA decode alone would add >= 256 MB

CORRECT = pixel_cases.correct_cases()
REFUSED = pixel_cases.refused_cases()


@pytest.fixture(scope="module")
def server():
    """A plain loopback HTTP server answering /NAME with the bytes in `files[NAME]`."""
    httpd = pixel_cases.Server()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    files = pixel_cases.Files.files
    files.update({k: v[0] for k, v in {**CORRECT, **REFUSED}.items()})
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()
    httpd.server_close()


def _rows(urls: list[str]) -> pa.Table:
    n = len(urls)
    none = pa.array([None] * n, pa.string())
    return pa.table({"uid": [str(i) for i in range(n)], "url": urls, "status": ["ok"] * n,
                     "stage": none, "reason": none, "error": none})


def _download(base: str, names: list[str], **settings) -> dict[str, dict]:
    stage = Download(timeout_s=10, threads=8, **settings)
    out = stage.process(_rows([f"{base}/{n}" for n in names])).to_pylist()
    return dict(zip(names, out))


def test_colour_cases_keep_the_source_pixels(server):
    base, _ = server
    rows = _download(base, list(CORRECT), resize_mode="no", encode_format="png")
    for name, (_, want, tol) in CORRECT.items():
        row = rows[name]
        assert row["status"] == "ok", (name, row["reason"], row["error"])
        got = np.asarray(Image.open(io.BytesIO(row["image"]))).astype(float)
        if want.ndim == 2 and got.ndim == 3:  # a grey source stored as RGB must have equal channels
            want = np.repeat(want[..., None], 3, axis=2)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        assert np.abs(got - want).max() <= tol, (name, np.abs(got - want).max())
        assert (row["width"], row["height"]) == (row["orig_width"], row["orig_height"]) == (got.shape[1], got.shape[0])


def test_16bit_mid_grey_stays_mid_grey_through_resize_and_jpeg(server):
    base, files = server
    files["flat16"] = pixel_cases.png_from_array(np.full((300, 400), 32896, np.uint16), 0)  # 128 * 257
    files["flat16rgb"] = pixel_cases.png_from_array(np.full((300, 400, 3), (65535, 32896, 0), np.uint16), 2)
    rows = _download(base, ["flat16", "flat16rgb"], image_size=64, resize_mode="center_crop", encode_format="jpg")
    grey = np.asarray(Image.open(io.BytesIO(rows["flat16"]["image"])).convert("L"), float)
    rgb = np.asarray(Image.open(io.BytesIO(rows["flat16rgb"]["image"])).convert("RGB"), float)
    assert grey.shape == (64, 64) and np.abs(grey - 128).max() <= 2
    assert np.abs(rgb - [255, 128, 0]).max() <= 3


def test_modes_without_an_8bit_mapping_fail_with_a_reason(server):
    base, _ = server
    rows = _download(base, list(REFUSED), resize_mode="no", encode_format="png")
    for name, (_, reason) in REFUSED.items():
        assert (rows[name]["status"], rows[name]["stage"], rows[name]["reason"]) == ("failed", "download", reason)
        assert rows[name]["image"] is None


_BOMB_CHILD = r"""
import json, sys
from tests.hostile.pixel_cases import bomb_cases
from curate.download.image import Download
import pyarrow as pa
def peak_mb():  # this process's own peak: VmHWM (ru_maxrss would include the parent's peak, via vfork)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
base = sys.argv[1]
names = list(bomb_cases())
stage = Download(timeout_s=20, threads=8, image_size=64)
stage._resizer()  # its imports (OpenCV, albumentations) belong to the baseline
rss0 = peak_mb()
n = len(names)
none = pa.array([None] * n, pa.string())
t = pa.table({"uid": names, "url": [f"{base}/{k}" for k in names], "status": ["ok"] * n, "stage": none,
              "reason": none, "error": none})
rows = stage.process(t).to_pylist()
print(json.dumps({"rss0_mb": rss0, "peak_mb": peak_mb(),
                  "rows": {r["uid"]: [r["status"], r["reason"], r["error"]] for r in rows}}))
"""


def test_bombs_fail_alone_with_bounded_memory(server):
    base, files = server
    bombs = pixel_cases.bomb_cases()
    files.update({k: v[0] for k, v in bombs.items()})
    proc = subprocess.run([sys.executable, "-c", _BOMB_CHILD, base], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1",
                                            "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, reason) in bombs.items():
        assert out["rows"][name][:2] == ["failed", reason], (name, out["rows"][name])
    assert out["peak_mb"] < RSS_LIMIT_MB, out


def test_bomb_builders_make_real_images():
    """The bombs are valid files (a small one from the same builder decodes), so refusing them is the bound."""
    px = images.decode(pixel_cases.zero_png(300, 2000, 6, 4), max_pixels=10**6)
    assert px.shape == (2000, 300, 3) and (px == 255).all()  # zero RGBA = transparent black = white
    assert images.decode(pixel_cases.zero_png(64, 64, 0, 1)).max() == 0


def test_max_pixels_setting_and_pixel_budget():
    data = pixel_cases.png_from_array(np.zeros((100, 100), np.uint8), 0)
    with pytest.raises(images.ImageError) as err:
        images.decode(data, max_pixels=9999)
    assert err.value.reason == "image_too_many_pixels"
    assert images.decode(data, max_pixels=10000).shape == (100, 100)
    budget = images.PixelBudget(100)
    with budget.hold(60):
        took = []
        t = threading.Thread(target=lambda: budget.hold(60).__enter__() or took.append(1))
        t.start()
        t.join(0.2)
        assert not took  # 60 + 60 > 100: the second waits
    t.join(5)
    assert took


@pytest.mark.parametrize("mode", ["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"])
def test_resize_matches_img2dataset_resizer_bytes(mode):
    """8-bit RGB through curate.images + Resize gives img2dataset's Resizer's bytes, up and down, all encoders."""
    rng = np.random.default_rng(0)
    for w, h in ((300, 200), (50, 90)):
        data = pixel_cases._save(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), "JPEG")
        for enc in ("jpg", "png", "webp"):
            for only_bigger in (False, True):
                stage = Download(image_size=128, resize_mode=mode, encode_format=enc, resize_only_if_bigger=only_bigger)
                resize = stage._resizer()
                ours = stage.decode_resize(data, resize, images.PixelBudget(stage.max_pixels))
                theirs = resize.r(io.BytesIO(data))
                assert ours["bytes"] == theirs[0], (w, h, enc, only_bigger)
                assert (ours["width"], ours["height"], ours["orig_width"], ours["orig_height"]) == tuple(theirs[1:5])


def test_every_image_decode_goes_through_curate_images():
    """No direct PIL/OpenCV decode of sample bytes is left in curate/ or filters/."""
    bad = []
    for path in [*REPO.joinpath("curate").rglob("*.py"), *REPO.joinpath("filters").rglob("*.py")]:
        if path.name == "images.py" and path.parent.name == "curate":
            continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"Image\.open\(|imdecode\(|\.to_image\(", line):
                bad.append(f"{path.relative_to(REPO)}:{k}: {line.strip()}")
    assert not bad, bad


def test_video_frames_are_bounded_before_decoding():
    """PyAV paths: probe and the clip splitter refuse a stream whose declared frame size exceeds max_pixels."""
    pytest.importorskip("av")
    from curate.video import probe, split, synth
    from curate.video.clip_split import ClipSplit

    video = synth.scenes_video([synth.Scene("square", "red", "right", "black", 1.0)], fps=10, size=64, seed=1)
    assert probe.probe(video).reason is None
    refused = probe.probe(video, max_pixels=64 * 64 - 1)
    assert refused.reason == "video_too_many_pixels" and "64x64" in refused.error
    assert probe.probe(video, max_pixels=64 * 64).reason is None
    with pytest.raises(probe.TooManyPixels):
        split.scan(video, sample_every_s=0.5, max_pixels=1000)
    none = pa.array([None], pa.string())
    table = pa.table({"uid": ["v"], "row": pa.array([0], pa.int64()), "text": ["t"], "status": ["ok"], "stage": none,
                      "reason": none, "error": none, "video": pa.array([video], pa.binary()),
                      "fps": [10.0], "duration": [1.0], "cues": pa.nulls(1, pa.list_(pa.struct([("text", pa.string())])))})
    row = ClipSplit(max_pixels=1000, min_clip_s=0.5).process(table).to_pylist()[0]
    assert (row["status"], row["reason"]) == ("failed", "video_too_many_pixels")


def test_banded_conversion_gives_the_same_pixels(monkeypatch):
    """Large images are converted in row bands (bounded temporaries); bands of a few rows give the same pixels."""
    monkeypatch.setattr(images, "BAND_PIXELS", 100)
    for name, (data, want, tol) in CORRECT.items():
        got = images.decode(data).astype(float)
        if want.ndim == 2 and got.ndim == 3:
            want = np.repeat(want[..., None], 3, axis=2)
        assert got.shape == want.shape and np.abs(got - want).max() <= tol, name


def test_decode_errors_carry_no_object_address():
    """PIL's message names `<_io.BytesIO object at 0x7f..>`: the same bad bytes must give the same `error`
    text in every run (and in the report), so the address is dropped."""
    from curate.stage import error_line

    with pytest.raises(images.ImageError) as err:
        images.decode(b"not an image at all")
    assert err.value.reason == "image_decode_error" and " at 0x" not in str(err.value)
    assert "BytesIO object>" in str(err.value)
    assert error_line(ValueError("cannot identify image file <_io.BytesIO object at 0x7f2a1c>")) == \
        "ValueError: cannot identify image file <_io.BytesIO object>"
