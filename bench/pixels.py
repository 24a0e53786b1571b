"""Peak memory of the download stage on image bombs vs clean images, and the speed of its decode step.

    .venv/bin/python bench/pixels.py                 # all of it, writes the `pixels` section of bench/RESULTS.md
    .venv/bin/python bench/pixels.py --no-before     # skip img2dataset's Resizer on the bombs (needs ~5 GB)
    .venv/bin/python bench/pixels.py --no-write

Memory: each run is one subprocess doing what a download worker does with one part (the real Download stage
fetching from a loopback server in this process); its peak RSS is the child's ru_maxrss. Runs:
  - bombs: the six files of tests/hostile/pixel_cases.bomb_cases (8000x8000 RGBA PNG of 247 KiB, 32000x32000
    grey PNG, GIF and WebP with huge canvases, a JPEG declaring 65000x65000, a PNG with a 100 MB zTXt);
  - clean: as many ordinary 1024x768 JPEGs (the "clean run of the same size");
  - at the cap: as many 7000x7000 JPEGs (49 Mpx, just under the default max_pixels): what a legal image costs;
  - before (unless --no-before): img2dataset's Resizer (the decode path curate used before) on each bomb,
    one subprocess per bomb under an address-space limit of --before-limit-gb so it cannot take the machine.
Speed: decode + resize + encode of the 500 JPEGs bench/download.py serves (96-400 px, 256 px center_crop, jpg
q95), img2dataset's Resizer vs curate.images + Resize, one thread and 8 threads, runs alternated.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from _common import REPO, bench_env, update_results  # noqa: E402

PACKAGES = ["curate", "img2dataset", "opencv-python-headless", "pillow", "numpy", "albumentations"]

_STAGE_CHILD = r"""
import json, sys, time
from curate.download.image import Download
import pyarrow as pa
def peak_mb():  # this process's own peak: VmHWM (ru_maxrss would include the parent's peak, via vfork)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
urls = json.loads(sys.argv[1])
stage = Download(timeout_s=60, threads=32, image_size=256)
stage._resizer()  # its imports (OpenCV, albumentations) belong to the baseline
rss0 = peak_mb()
n = len(urls)
none = pa.array([None] * n, pa.string())
t0 = time.time()
rows = stage.process(pa.table({"uid": [str(i) for i in range(n)], "url": urls, "status": ["ok"] * n,
                               "stage": none, "reason": none, "error": none})).to_pylist()
print(json.dumps({"imports_mb": rss0, "peak_mb": peak_mb(), "s": time.time() - t0,
                  "outcomes": [r["reason"] or r["status"] for r in rows]}))
"""

_BEFORE_CHILD = r"""
import io, json, resource, sys, time
def peak_mb():  # this process's own peak: VmHWM (ru_maxrss would include the parent's peak, via vfork)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
limit = int(float(sys.argv[2]) * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from curate.download._i2d import Resizer, ResizeMode
data = open(sys.argv[1], "rb").read()
r = Resizer(256, ResizeMode.center_crop, False, encode_format="jpg", encode_quality=95)
rss0 = peak_mb()
t0 = time.time()
try:
    img, w, h, ow, oh, err = r(io.BytesIO(data))
except MemoryError as e:
    img, err, ow, oh = None, "MemoryError", None, None
print(json.dumps({"imports_mb": rss0, "peak_mb": peak_mb(), "s": time.time() - t0,
                  "outcome": err or f"kept {ow}x{oh}"}))
"""


def _jpeg(w: int, h: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    fx, fy = rng.uniform(0.002, 0.02, 2)
    row = (127 + 100 * np.sin(np.arange(w) * fx)).astype(np.uint8)
    col = (127 + 100 * np.cos(np.arange(h) * fy)).astype(np.uint8)
    img = np.stack([np.broadcast_to(row, (h, w)), np.broadcast_to(col[:, None], (h, w)),
                    np.broadcast_to(row[::-1], (h, w))], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def run_child(code: str, args: list[str], env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=900)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"peak_mb": float("nan"), "outcome": f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(base: str, env: dict, before: bool, before_limit_gb: float, work: Path) -> list[str]:
    from tests.hostile.pixel_cases import Files, bomb_cases

    bombs = bomb_cases()
    n = len(bombs)
    Files.files.update({f"bomb/{k}": v[0] for k, v in bombs.items()})
    Files.files.update({f"clean/{i}": _jpeg(1024, 768, i) for i in range(n)})
    cap = _jpeg(7000, 7000, 0)  # one file under n names: building it is the slow part
    Files.files.update({f"cap/{i}": cap for i in range(n)})
    lines = ["| run | rows | worker peak RSS | after imports | stage wall | outcomes |", "|---|---|---|---|---|---|"]
    for label, prefix, names in (("clean: 1024x768 JPEGs", "clean", [str(i) for i in range(n)]),
                                 ("bombs (curate.images)", "bomb", list(bombs)),
                                 ("at the cap: 7000x7000 JPEGs (49 Mpx)", "cap", [str(i) for i in range(n)])):
        out = run_child(_STAGE_CHILD, [json.dumps([f"{base}/{prefix}/{k}" for k in names])], env)
        print(label, json.dumps(out)[:300], flush=True)
        outcomes = ", ".join(f"{o} x{out['outcomes'].count(o)}" for o in dict.fromkeys(out.get("outcomes", [])))
        lines.append(f"| {label} | {n} | {out['peak_mb']:.0f} MB | {out.get('imports_mb', float('nan')):.0f} MB "
                     f"| {out.get('s', float('nan')):.1f} s | {outcomes or out.get('outcome')} |")
    if before:
        lines += ["", f"Before (img2dataset's Resizer = OpenCV imdecode, one subprocess per bomb, address space "
                      f"capped at {before_limit_gb:g} GB):", "",
                  "| bomb | file | peak RSS | wall | outcome |", "|---|---|---|---|---|"]
        work.mkdir(parents=True, exist_ok=True)
        for name, (data, _) in bombs.items():
            path = work / name
            path.write_bytes(data)
            out = run_child(_BEFORE_CHILD, [str(path), str(before_limit_gb)], env)
            print("before", name, json.dumps(out)[:300], flush=True)
            outcome = str(out.get("outcome"))
            if "CV_IO_MAX_IMAGE_PIXELS" in outcome:
                outcome = "refused by OpenCV's own cap (CV_IO_MAX_IMAGE_PIXELS, 1 Gpx)"
            lines.append(f"| {name} | {len(data):,} B | {out['peak_mb']:.0f} MB | {out.get('s', float('nan')):.1f} s "
                         f"| {outcome[:80]} |")
            path.unlink()
    return lines


def speed(work: Path, repeat: int) -> list[str]:
    from multiprocessing.pool import ThreadPool

    from curate import images
    from curate.download.image import Download
    from download import make_pool

    names = make_pool(work / "pool", 500)
    blobs = [(work / "pool" / n).read_bytes() for n in names]
    stage = Download(image_size=256, resize_mode="center_crop", encode_format="jpg", encode_quality=95)
    resize = stage._resizer()
    budget = images.PixelBudget(stage.max_pixels)

    def old(data):
        return resize.r(io.BytesIO(data))[0]

    def new(data):
        return stage.decode_resize(data, resize, budget)["bytes"]

    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeat):
        for threads in (1, 8):
            for label, fn in (("img2dataset Resizer", old), ("curate.images + Resize", new)):
                with ThreadPool(threads) as pool:
                    t0 = time.perf_counter()
                    pool.map(fn, blobs, chunksize=4)
                    times.setdefault((label, threads), []).append(time.perf_counter() - t0)
    lines = ["| decode + resize + encode, 500 JPEGs | threads | median ms/image | vs img2dataset |", "|---|---|---|---|"]
    for threads in (1, 8):
        base = statistics.median(times[("img2dataset Resizer", threads)])
        for label in ("img2dataset Resizer", "curate.images + Resize"):
            t = statistics.median(times[(label, threads)])
            lines.append(f"| {label} | {threads} | {t / len(blobs) * 1e3:.2f} | {t / base:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-before", dest="before", action="store_false", help="skip img2dataset's Resizer on the bombs")
    p.add_argument("--before-limit-gb", type=float, default=8.0)
    p.add_argument("--repeat", type=int, default=5, help="alternated runs per decoder in the speed part")
    p.add_argument("--work", type=Path, default=BENCH / "out" / "pixels")
    p.add_argument("--write", dest="write", action="store_true", default=True)
    p.add_argument("--no-write", dest="write", action="store_false")
    a = p.parse_args(argv)

    from tests.hostile.pixel_cases import Server

    env = bench_env(PYTHONPATH=str(REPO))
    httpd = Server()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    load0 = os.getloadavg()
    t0 = time.time()
    try:
        mem = memory(base, env, a.before, a.before_limit_gb, a.work)
    finally:
        httpd.shutdown()
    spd = speed(a.work, a.repeat)
    load1 = os.getloadavg()
    body = "\n".join([
        f"Command: `.venv/bin/python bench/pixels.py{'' if a.before else ' --no-before'}` "
        f"({time.time() - t0:.0f} s; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end, on a machine "
        f"shared with other jobs).", "",
        "Peak RSS of one download worker (the Download stage in its own process, 32 threads, default "
        "max_pixels 50 Mpx) on one part of 6 rows:", "", *mem, "",
        "Decode-step speed (single process, no network; old = what the download stage ran before):", "", *spd,
        "", "Reading: with curate.images a part full of bombs leaves the worker at its clean-run footprint; the old "
        "decode path kept three of them (up to 4.8 GB for the 247 KiB 8000x8000 RGBA PNG). max_pixels also bounds "
        "what a legal image costs (the at-the-cap row), and the pixel budget lets only one such decode run at a time.",
    ])
    print(body)
    if a.write:
        print("wrote", update_results("pixels", body, PACKAGES))


if __name__ == "__main__":
    main()
