"""Download throughput and peak memory: `curate run download_only` vs bare img2dataset, same URLs, same settings.

    .venv/bin/python bench/download.py                    # N = 10,000 and 50,000, writes bench/RESULTS.md
    .venv/bin/python bench/download.py --quick            # N = 2,000 smoke run, prints only
    .venv/bin/python bench/download.py --sizes 10000 --repeat 3 --no-write

What it does, in one invocation:
  1. makes a pool of distinct JPEGs (PIL, 96-400 px per side, textured so they do not compress to nothing)
     under WORK/root/files and serves it with curate.demo.server.DemoServer on 127.0.0.1;
  2. for each N writes urls-N.parquet: url = {server}/img/pNNN.jpg?n=<i> (the server answers the path and
     ignores the query string, so every URL is distinct but the pool stays small), caption = text;
  3. runs, each in its own subprocess, bare img2dataset (Python API, multiprocessing distributor) and
     `curate run download_only` with the same settings: image_size 256, center_crop, jpg q95, timeout 10,
     retries 0, 32 threads per process, 2 processes (= Ray num_cpus), 10,000 samples per shard;
  4. samples the summed RSS of the subprocess's whole tree (Ray's GCS, raylet and workers included) every
     0.2 s, and PSS/USS every 1 s; checks that both sides kept the same URLs.

"work s" excludes process start-up: for curate it is manifest.json timings split + segment0 (i.e. without
Ray start-up/shutdown and interpreter import), for img2dataset the time spent inside img2dataset.download().
img2dataset runs with extract_exif=False (curate does not extract EXIF; img2dataset's default would make it
do more work than curate) and its default compute_hash=sha256 (curate also hashes every download).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from _common import REPO, CpuMeter, TreeSampler, bench_env, update_results  # noqa: E402

SETTINGS = dict(image_size=256, resize_mode="center_crop", encode_format="jpg", encode_quality=95, timeout=10,
                retries=0, threads=32, processes=2, samples_per_shard=10000)
PACKAGES = ["curate", "img2dataset", "ray", "pyarrow", "opencv-python-headless", "numpy", "pillow", "psutil"]


# ----------------------------------------------------------------------------------------------------------
# the img2dataset side (runs in a child: `download.py --_img2dataset CONFIG_JSON`)


def _img2dataset_child(cfg: dict) -> None:
    import img2dataset

    t0 = time.time()
    img2dataset.download(
        url_list=cfg["urls"], input_format="parquet", url_col="url", caption_col="caption",
        output_format="webdataset", output_folder=cfg["out"], processes_count=SETTINGS["processes"],
        thread_count=SETTINGS["threads"], image_size=SETTINGS["image_size"], resize_mode=SETTINGS["resize_mode"],
        encode_format=SETTINGS["encode_format"], encode_quality=SETTINGS["encode_quality"],
        number_sample_per_shard=SETTINGS["samples_per_shard"], timeout=SETTINGS["timeout"],
        retries=SETTINGS["retries"], distributor="multiprocessing", enable_wandb=False, extract_exif=False,
        compute_hash="sha256",
    )
    Path(cfg["timing"]).write_text(json.dumps({"work_s": round(time.time() - t0, 3)}))


# ----------------------------------------------------------------------------------------------------------
# inputs


def make_pool(files: Path, count: int, seed: int = 0) -> list[str]:
    """`count` distinct JPEGs, 96-400 px per side, smooth gradients plus noise (compress like photos, roughly)."""
    import numpy as np
    from PIL import Image

    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for k in range(count):
        name = f"p{k:04d}.jpg"
        names.append(name)
        path = files / name
        if path.exists():
            continue
        w, h = (int(v) for v in rng.integers(96, 401, size=2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(0.005, 0.05, size=(3, 2))
        phase = rng.uniform(0, 6.3, size=3)
        chans = [127 + 100 * np.sin(f[c, 0] * x + f[c, 1] * y + phase[c]) for c in range(3)]
        img = np.stack(chans, axis=-1) + rng.normal(0, 12, size=(h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return names


def write_urls(path: Path, base: str, names: list[str], n: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    words = "a photo of the red blue small large dog cat house tree street car on in with".split()
    urls = [f"{base}/img/{names[i % len(names)]}?n={i}" for i in range(n)]
    caps = [" ".join(rng.choices(words, k=8)) + f" #{i}" for i in range(n)]
    pq.write_table(pa.table({"url": urls, "caption": caps}), path)


# ----------------------------------------------------------------------------------------------------------
# running and measuring one side


def wait_for_quiet(max_load: float | None, wait_s: float) -> None:
    """Wait (up to wait_s) until the 1-minute load average is at most max_load."""
    if max_load is None:
        return
    t0 = time.time()
    while os.getloadavg()[0] > max_load and time.time() - t0 < wait_s:
        time.sleep(5)
    if os.getloadavg()[0] > max_load:
        print(f"    (load1 still {os.getloadavg()[0]:.2f} > {max_load} after {wait_s:.0f}s; running anyway)", flush=True)


ENV: dict[str, str] = {}


def measure(cmd: list[str], log: Path, server_pid: int | None, interval: float, attempt: int = 1) -> dict:
    """Run `cmd` once, sampling its process tree. A local Ray start that times out (Ray gives the raylet a
    fixed 30 s to register with the GCS, which a heavily loaded machine can miss) is retried up to 3 times."""
    import psutil

    server = psutil.Process(server_pid) if server_pid else None
    s0 = sum(server.cpu_times()[:2]) if server else 0.0
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "wb") as fh, CpuMeter() as cpu:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=ENV, cwd=REPO)
        sampler = TreeSampler(proc.pid, interval=interval).start()
        rc = proc.wait()
        wall = time.time() - t0
        sampler.stop()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # sampled per process (Ray's workers are not always reaped through our child, so rusage can miss them);
    # rusage of reaped children as a floor
    tree_cpu = max(sampler.cpu_s, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    server_cpu = (sum(server.cpu_times()[:2]) - s0) if server else 0.0
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        if "timed out during startup" in tail and attempt < 3:
            print(f"    (Ray start timed out at load1 {os.getloadavg()[0]:.1f}; running again)", flush=True)
            return measure(cmd, log, server_pid, interval, attempt + 1)
        raise SystemExit(f"command failed (exit {rc}): {' '.join(cmd)}\n--- {log} ---\n{tail}")
    return {
        "wall_s": wall, "rss_mb": sampler.peak_rss / 2**20, "pss_mb": sampler.peak_pss / 2**20,
        "uss_mb": sampler.peak_uss / 2**20, "procs": sampler.peak_procs, "tree_cpu_s": tree_cpu,
        "server_cpu_s": server_cpu, "other_cpu_s": max(0.0, cpu.busy_s - tree_cpu - server_cpu),
        "load_before": cpu.load0[0], "load_after": cpu.load1[0], "samples": sampler.samples,
        "breakdown": sampler.breakdown(),
    }


def tar_images(folder: Path) -> int:
    n = 0
    for t in sorted(glob.glob(str(folder / "**" / "*.tar"), recursive=True)):
        with tarfile.open(t) as tar:
            n += sum(1 for m in tar if m.name.endswith((".jpg", ".png", ".webp")))
    return n


def run_img2dataset(urls: Path, out: Path, work: Path, interval: float, server_pid: int) -> dict:
    import pyarrow.dataset as pads

    timing = work / f"{out.name}.timing.json"
    cfg = {"urls": str(urls), "out": str(out), "timing": str(timing)}
    res = measure([sys.executable, str(Path(__file__).resolve()), "--_img2dataset", json.dumps(cfg)],
                  work / f"{out.name}.log", server_pid, interval)
    res["work_s"] = json.loads(timing.read_text())["work_s"]
    stats = [json.loads(Path(p).read_text()) for p in glob.glob(str(out / "*_stats.json"))]
    res["success"] = sum(s["successes"] for s in stats)
    res["tar_images"] = tar_images(out)
    res["shard_s"] = sum(s["duration"] for s in stats)  # img2dataset's own per-shard download time
    t = pads.dataset(sorted(glob.glob(str(out / "*.parquet"))), format="parquet").to_table(columns=["url", "status"])
    res["ok_urls"] = {u for u, s in zip(t.column("url").to_pylist(), t.column("status").to_pylist()) if s == "success"}
    res["errors"] = {}
    return res


def run_curate(urls: Path, out: Path, work: Path, interval: float, server_pid: int) -> dict:
    import pyarrow.dataset as pads

    curate = Path(sys.executable).with_name("curate")
    cmd = [str(curate) if curate.exists() else "curate", "run", "download_only", "--input", str(urls),
           "--output", str(out),
           "--set", f"download.threads={SETTINGS['threads']}",
           "--set", f"download.image_size={SETTINGS['image_size']}",
           "--set", f"download.resize_mode={SETTINGS['resize_mode']}",
           "--set", f"download.encode_format={SETTINGS['encode_format']}",
           "--set", f"download.encode_quality={SETTINGS['encode_quality']}",
           "--set", f"download.timeout_s={SETTINGS['timeout']}",
           "--set", f"download.retries={SETTINGS['retries']}",
           "--set", f"ray.num_cpus={SETTINGS['processes']}",
           "--set", f"output.samples_per_shard={SETTINGS['samples_per_shard']}"]
    res = measure(cmd, work / f"{out.name}.log", server_pid, interval)
    manifest = json.loads((out / "manifest.json").read_text())
    timings = manifest.get("timings", {})
    res["timings"] = timings
    res["work_s"] = sum(v for k, v in timings.items() if k == "split" or k.startswith("segment"))
    res["success"] = manifest["counts"]["kept"]
    res["errors"] = manifest["counts"].get("failed", {})
    res["tar_images"] = tar_images(out / "shards")
    t = pads.dataset(str(out / "meta"), format="parquet").to_table(columns=["url", "status"])
    res["ok_urls"] = {u for u, s in zip(t.column("url").to_pylist(), t.column("status").to_pylist()) if s == "ok"}
    return res


# ----------------------------------------------------------------------------------------------------------
# report


def fmt_table(rows: list[dict]) -> str:
    head = ["tool", "N", "run", "wall s", "img/s", "work s", "img/s (work)", "peak RSS MB", "peak PSS MB",
            "peak USS MB", "procs", "success", "CPU s tool", "CPU ms/img", "CPU s server", "CPU s other", "load1 before/after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["tool"], f"{r['n']:,}", str(r["rep"]), f"{r['wall_s']:.1f}", f"{r['n'] / r['wall_s']:.0f}",
                 f"{r['work_s']:.1f}", f"{r['n'] / r['work_s']:.0f}", f"{r['rss_mb']:.0f}", f"{r['pss_mb']:.0f}",
                 f"{r['uss_mb']:.0f}", str(r["procs"]), f"{r['success']:,}", f"{r['tree_cpu_s']:.0f}", f"{1000 * r['tree_cpu_s'] / r['n']:.1f}",
                 f"{r['server_cpu_s']:.0f}", f"{r['other_cpu_s']:.0f}", f"{r['load_before']:.2f}/{r['load_after']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_md(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        parts = [f"{label} x{k}: {c:.1f} s / {m:.0f} MB" for label, k, c, m in r["breakdown"] if c >= 0.05 or m >= 20]
        lines.append(f"- {r['tool']} N={r['n']:,} run {r['rep']}: " + "; ".join(parts))
    return "\n".join(lines)


def summarize(rows: list[dict], sizes: list[int]) -> tuple[str, list[str]]:
    med = lambda tool, n, key: statistics.median(r[key] for r in rows if r["tool"] == tool and r["n"] == n)
    out, problems = [], []
    out.append("| N | throughput ratio curate/img2dataset (end-to-end) | ratio (work, excl. start-up) "
               "| CPU-efficiency ratio (img2dataset CPU s / curate CPU s) | peak tree RSS ratio curate/img2dataset "
               "| peak tree PSS ratio | targets: throughput >= 1.0, RSS <= 1.0 |")
    out.append("|---|---|---|---|---|---|---|")
    for n in sizes:
        e2e = med("img2dataset", n, "wall_s") / med("curate", n, "wall_s")
        work = med("img2dataset", n, "work_s") / med("curate", n, "work_s")
        cpu = med("img2dataset", n, "tree_cpu_s") / med("curate", n, "tree_cpu_s")
        rss = med("curate", n, "rss_mb") / med("img2dataset", n, "rss_mb")
        pss = med("curate", n, "pss_mb") / med("img2dataset", n, "pss_mb")
        ok = f"throughput {'met' if e2e >= 1.0 else '**missed**'}, memory {'met' if rss <= 1.0 else '**missed**'}"
        out.append(f"| {n:,} | {e2e:.2f} | {work:.2f} | {cpu:.2f} | {rss:.2f} | {pss:.2f} | {ok} |")
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        out.append("")
        out.append(f"| tool | peak RSS {lo // 1000}k MB | peak RSS {hi // 1000}k MB | RSS growth {hi // 1000}k/{lo // 1000}k "
                   f"| PSS growth {hi // 1000}k/{lo // 1000}k |")
        out.append("|---|---|---|---|---|")
        for tool in ("curate", "img2dataset"):
            a, b = med(tool, lo, "rss_mb"), med(tool, hi, "rss_mb")
            pa_, pb = med(tool, lo, "pss_mb"), med(tool, hi, "pss_mb")
            out.append(f"| {tool} | {a:.0f} | {b:.0f} | {b / a:.2f} | {pb / pa_:.2f} |")
    for n in sizes:
        for r in (r for r in rows if r["n"] == n):
            if r["success"] != r["tar_images"]:
                problems.append(f"{r['tool']} N={n} run {r['rep']}: {r['success']} successes but {r['tar_images']} images in tars")
        for rep in sorted({r["rep"] for r in rows if r["n"] == n}):
            c = next(r for r in rows if r["n"] == n and r["rep"] == rep and r["tool"] == "curate")
            i = next(r for r in rows if r["n"] == n and r["rep"] == rep and r["tool"] == "img2dataset")
            if c["ok_urls"] != i["ok_urls"]:
                problems.append(f"N={n} run {rep}: success sets differ: curate {len(c['ok_urls'])}, img2dataset "
                                f"{len(i['ok_urls'])}, only curate {len(c['ok_urls'] - i['ok_urls'])}, only img2dataset "
                                f"{len(i['ok_urls'] - c['ok_urls'])}; curate failures {c['errors']}")
    if not problems:
        out.append("")
        out.append("Both tools kept exactly the same set of URLs at every N (and every success is an image in a tar).")
    return "\n".join(out), problems


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000], help="URL counts (default 10000 50000)")
    p.add_argument("--quick", action="store_true", help="one 2,000-URL smoke run (overrides --sizes)")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool and N; the order alternates (default 1)")
    p.add_argument("--pool", type=int, default=500, help="distinct images served (default 500)")
    p.add_argument("--interval", type=float, default=0.2, help="memory sampling period in seconds")
    p.add_argument("--work", type=Path, default=BENCH / "out" / "download", help="scratch folder (wiped first)")
    p.add_argument("--max-load", type=float, default=None,
                   help="before each run wait until load1 <= this (other processes share the machine)")
    p.add_argument("--max-wait", type=float, default=300, help="wait at most this long for --max-load (s)")
    p.add_argument("--warmup", type=int, default=500,
                   help="unmeasured run of each tool on this many URLs first (fills the bytecode cache, the "
                        "server cache and the page cache); 0 skips it (default 500)")
    p.add_argument("--no-bytecode-cache", action="store_true",
                   help="keep the environment's PYTHONDONTWRITEBYTECODE instead of caching bytecode in bench/out/pycache")
    p.add_argument("--breakdown", action="store_true", help="print CPU s and peak RSS per kind of process")
    p.add_argument("--keep", action="store_true", help="keep the outputs in --work")
    p.add_argument("--only", choices=["curate", "img2dataset"], help="run one side only (no ratio)")
    p.add_argument("--write", dest="write", action="store_true", default=None, help="write bench/RESULTS.md")
    p.add_argument("--no-write", dest="write", action="store_false")
    p.add_argument("--section", default="download", help="bench/RESULTS.md section to write (default download)")
    args = p.parse_args(argv)
    sizes = [2000] if args.quick else sorted(args.sizes)
    write = (not args.quick and not args.only) if args.write is None else args.write

    ENV.update(bench_env(bytecode_cache=not args.no_bytecode_cache))
    os.environ.update(bench_env(bytecode_cache=False))
    from curate.demo.server import DemoServer

    work = args.work.resolve()
    pool_dir = work / "root"
    for child in work.glob("*") if work.exists() else []:
        if child != pool_dir and child.name != "pycache":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    names = make_pool(pool_dir / "files", args.pool)
    pool_mb = sum(f.stat().st_size for f in (pool_dir / "files").glob("*.jpg")) / 2**20
    print(f"pool: {len(names)} JPEGs, {pool_mb:.1f} MB ({time.time() - t:.1f}s)", flush=True)

    rows = []
    tools = [args.only] if args.only else ["img2dataset", "curate"]
    with DemoServer(pool_dir) as srv:
        print(f"server: {srv.url} (pid {srv.pid})", flush=True)
        import urllib.request
        with urllib.request.urlopen(f"{srv.url}/img/{names[0]}?n=probe", timeout=5) as r:  # query string ignored?
            assert r.status == 200 and r.read(3) == b"\xff\xd8\xff", "server did not serve /img/NAME?n=i"
        for name in names:  # warm the server's byte cache so neither side pays for first reads
            urllib.request.urlopen(f"{srv.url}/img/{name}", timeout=5).read()
        if args.warmup:
            urls = work / "urls-warmup.parquet"
            write_urls(urls, srv.url, names, args.warmup)
            for tool in tools:
                t = time.time()
                fn = run_curate if tool == "curate" else run_img2dataset
                fn(urls, work / f"warmup-{tool}", work, args.interval, srv.pid)
                shutil.rmtree(work / f"warmup-{tool}", ignore_errors=True)
                print(f"warm-up: {tool} on {args.warmup} URLs ({time.time() - t:.1f}s, not measured)", flush=True)
        for n in sizes:
            urls = work / f"urls-{n}.parquet"
            write_urls(urls, srv.url, names, n)
            for rep in range(1, args.repeat + 1):
                order = tools if rep % 2 else tools[::-1]
                for tool in order:
                    out = work / f"{tool}-{n}-{rep}"
                    print(f"[{time.strftime('%H:%M:%S')}] {tool} N={n:,} run {rep} (load1 {os.getloadavg()[0]:.2f}) ...",
                          flush=True)
                    wait_for_quiet(args.max_load, args.max_wait)
                    fn = run_curate if tool == "curate" else run_img2dataset
                    r = fn(urls, out, work, args.interval, srv.pid)
                    r.update(tool=tool, n=n, rep=rep)
                    rows.append(r)
                    print(f"    {r['wall_s']:.1f}s wall, {r['work_s']:.1f}s work, {n / r['wall_s']:.0f} img/s, "
                          f"peak RSS {r['rss_mb']:.0f} MB (PSS {r['pss_mb']:.0f}), {r['success']:,} ok"
                          + (f", timings {r['timings']}" if "timings" in r else ""), flush=True)
                    if args.breakdown:
                        for label, k, c, m in r["breakdown"]:
                            print(f"      {c:7.1f} CPU s  {m:6.0f} MB peak  x{k:<3d} {label}", flush=True)
                    if not args.keep:
                        shutil.rmtree(out, ignore_errors=True)

    table = fmt_table(rows)
    print()
    print(table)
    summary, problems = ("", []) if args.only else summarize(rows, sizes)
    if summary:
        print()
        print(summary)
    for msg in problems:
        print("PROBLEM:", msg)
    cmd = ".venv/bin/python bench/download.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if write:
        body = f"""Command: `{cmd.strip()}`

Settings (both tools): image_size {SETTINGS['image_size']}, resize_mode {SETTINGS['resize_mode']}, jpg q{SETTINGS['encode_quality']}, timeout {SETTINGS['timeout']} s, retries {SETTINGS['retries']}, {SETTINGS['threads']} threads x {SETTINGS['processes']} processes (curate: Ray num_cpus=2, one task per part), {SETTINGS['samples_per_shard']:,} samples per shard/part; img2dataset with extract_exif=False, compute_hash=sha256. URLs: {len(names)} distinct JPEGs ({pool_mb:.1f} MB, 96-400 px) served by curate.demo.server.DemoServer on 127.0.0.1, `?n=i` makes every URL distinct (the server ignores the query string). Ran {time.strftime('%Y-%m-%d %H:%M')}; the server shares the same 2 cores. {"Bytecode cached in bench/out/pycache (this environment sets PYTHONDONTWRITEBYTECODE=1 and the venv holds no .pyc files; without a cache every Ray helper/worker and img2dataset worker recompiles ray/torch from source); " if not args.no_bytecode_cache else "Environment's PYTHONDONTWRITEBYTECODE kept (no bytecode cache); "}{f"one unmeasured warm-up run of each tool on {args.warmup} URLs first." if args.warmup else "no warm-up run."}

Columns: *wall s* is the whole subprocess (for curate: interpreter import, Ray start-up and shutdown included); *work s* excludes start-up (curate: manifest timings split + segment0; img2dataset: time inside `img2dataset.download()`). Peak RSS is the peak of the RSS summed over the subprocess and all its descendants (Ray GCS, raylet, workers), sampled every {args.interval} s; PSS/USS every {args.interval * 5:g} s (summed PSS counts shared pages once, so it is the tree's real footprint). *CPU s tool* is user+sys of the tree, *CPU s server* the loopback server's, *CPU s other* the rest of the machine during the run (other processes, e.g. tests).

{table}

{summary}

CPU seconds (and largest single-process peak RSS) per kind of process, per run:

{breakdown_md(rows)}
""" + ("\n".join(f"- PROBLEM: {m}" for m in problems) + "\n" if problems else "")
        path = update_results(args.section, body, PACKAGES)
        print(f"\nwrote {path}")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_img2dataset":
        _img2dataset_child(json.loads(sys.argv[2]))
    else:
        main()
