"""What one slow host costs a run: `curate run download_only` on N good loopback URLs, with and without one
URL on a server that sends its body one byte per second (tests/hostile/server.py's /slow-drip.jpg).

    .venv/bin/python bench/hostile.py                     # N = 1,000, timeout_s 10, 2 runs each, writes RESULTS.md
    .venv/bin/python bench/hostile.py --repeat 1 --no-write
    .venv/bin/python bench/hostile.py --fetch-ab 2000     # also: fetch-only throughput, old fetcher vs new

Why: before the bounded fetcher, the download timeout was per socket read, so the drip never timed out and
held its part (and the run) for as many seconds as the body has bytes. The target is that one slow host
makes the run at most `timeout_s` longer. Good URLs come from curate.demo.server.DemoServer (its own
process); the slow host is a HostileServer thread in this process. Runs alternate (clean, slow, clean, ...)
so that load drifts hit both sides alike; each run is a fresh `curate` subprocess with its own local Ray.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from _common import REPO, bench_env, update_results  # noqa: E402
from download import make_pool, write_urls  # noqa: E402

PACKAGES = ["curate", "img2dataset", "ray", "pyarrow"]


def run_once(urls: Path, out: Path, timeout_s: float, env: dict) -> dict:
    curate = Path(sys.executable).with_name("curate")
    cmd = [str(curate) if curate.exists() else "curate", "run", "download_only", "--input", str(urls),
           "--output", str(out), "--set", f"download.timeout_s={timeout_s}", "--set", "ray.num_cpus=2"]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"curate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    timings = manifest.get("timings", {})
    work = sum(v for k, v in timings.items() if k == "split" or k.startswith("segment"))
    return {"wall_s": wall, "work_s": work, "kept": manifest["counts"]["kept"],
            "failed": manifest["counts"].get("failed", {}), "load1": os.getloadavg()[0]}


def fetch_ab(base: str, names: list[str], n: int, repeat: int, threads: int = 32) -> str:
    """Fetch-only throughput on `n` loopback URLs: img2dataset's download_image_with_retry in a ThreadPool of
    `threads` (what the download stage used before) vs curate.download.fetch.fetch_many(concurrency=threads),
    in this process, alternating, same URLs. Isolates the fetch path (resizing is the same code on both)."""
    from multiprocessing.pool import ThreadPool

    from curate.download.fetch import FetchError, Limits, fetch_many
    from curate.download._i2d import resizer  # noqa: F401 - imports OpenCV first, as the stage does
    import img2dataset.downloader as old  # noqa: E402 - the real package (imports torch: slow, once)

    urls = [f"{base}/img/{names[i % len(names)]}?n={i}" for i in range(n)]
    rows = []
    for rep in range(repeat):
        t0 = time.perf_counter()
        with ThreadPool(threads) as pool:
            ok_old = sum(1 for _k, s, _e in pool.imap_unordered(
                lambda item: old.download_image_with_retry(item, 10, 0, None, None), enumerate(urls)) if s is not None)
        t_old = time.perf_counter() - t0
        t0 = time.perf_counter()
        ok_new = sum(1 for _k, r in fetch_many(enumerate(urls), Limits(timeout_s=10), concurrency=threads)
                     if not isinstance(r, FetchError))
        t_new = time.perf_counter() - t0
        rows.append((rep + 1, t_old, t_new, ok_old, ok_new, os.getloadavg()[0]))
        print(f"fetch-only run {rep + 1}: img2dataset {n / t_old:.0f}/s ({ok_old} ok), curate {n / t_new:.0f}/s "
              f"({ok_new} ok), load1 {os.getloadavg()[0]:.1f}", flush=True)
    lines = [f"Fetch only, {n:,} loopback URLs, {threads} threads / concurrent requests, in one process, alternating:",
             "", "| run | img2dataset download_image_with_retry URLs/s | curate fetch_many URLs/s | ratio | load1 |",
             "|---|---|---|---|---|"]
    for rep, a, b, _oa, _ob, load in rows:
        lines.append(f"| {rep} | {n / a:.0f} | {n / b:.0f} | {a / b:.2f} | {load:.1f} |")
    med = statistics.median(a / b for _r, a, b, *_ in rows)
    lines += ["", f"Median ratio (curate / img2dataset fetch throughput): {med:.2f}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="good URLs (default 1000)")
    p.add_argument("--timeout", type=float, default=10.0, help="download.timeout_s (default 10)")
    p.add_argument("--repeat", type=int, default=2, help="runs per side (default 2)")
    p.add_argument("--work", type=Path, default=BENCH / "out" / "hostile", help="scratch folder (wiped first)")
    p.add_argument("--fetch-ab", type=int, default=0, metavar="N",
                   help="also measure fetch-only throughput on N URLs, old fetcher vs new (default off)")
    p.add_argument("--skip-runs", action="store_true", help="only the --fetch-ab measurement")
    p.add_argument("--write", dest="write", action="store_true", default=True)
    p.add_argument("--no-write", dest="write", action="store_false")
    args = p.parse_args(argv)

    from curate.demo.server import DemoServer
    from tests.hostile.server import HostileServer

    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "root").mkdir(parents=True)
    names = make_pool(args.work / "root" / "files", 200)
    env = bench_env()
    rows = []
    with DemoServer(args.work / "root") as good, HostileServer() as slow:
        clean, dirty = args.work / "clean.parquet", args.work / "slow.parquet"
        write_urls(clean, good.url, names, args.n)
        write_urls(dirty, good.url, names, args.n)
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = pq.read_table(dirty)
        mid = args.n // 2  # in the middle of the part: the drip starts while good URLs are still going
        t = pa.concat_tables([t.slice(0, mid), pa.table({"url": [slow.url("/slow-drip.jpg")], "caption": ["slow"]}),
                              t.slice(mid)])
        pq.write_table(t, dirty)
        ab = fetch_ab(good.url, names, args.fetch_ab, args.repeat) if args.fetch_ab else ""
        for rep in range(0 if args.skip_runs else args.repeat):
            for side, urls in (("clean", clean), ("one slow-drip host", dirty)):
                r = run_once(urls, args.work / "out", args.timeout, env)
                r.update(side=side, rep=rep + 1)
                rows.append(r)
                print(f"{side:20s} run {rep + 1}: wall {r['wall_s']:.1f} s, work {r['work_s']:.1f} s, kept {r['kept']}, "
                      f"failed {r['failed']}, load1 {r['load1']:.1f}", flush=True)

    lines = []
    if rows:
        med = {side: {k: statistics.median(r[k] for r in rows if r["side"] == side) for k in ("wall_s", "work_s")}
               for side in ("clean", "one slow-drip host")}
        extra_wall = med["one slow-drip host"]["wall_s"] - med["clean"]["wall_s"]
        extra_work = med["one slow-drip host"]["work_s"] - med["clean"]["work_s"]
        lines = [f"`curate run download_only`, {args.n:,} good loopback URLs (DemoServer), download.timeout_s = "
                 f"{args.timeout:g}, ray.num_cpus 2, one part; the slow side adds one URL (in the middle of the list) "
                 "whose server sends a 2,087-byte JPEG at 1 byte/s. Median of "
                 f"{args.repeat} alternating runs each; `work s` = manifest timings (split + segments), without start-up.",
                 "", "| side | run | wall s | work s | kept | failed | load1 after |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['side']} | {r['rep']} | {r['wall_s']:.1f} | {r['work_s']:.1f} | {r['kept']:,} | "
                         f"{json.dumps(r['failed'])} | {r['load1']:.1f} |")
        verdict = "met" if extra_work <= args.timeout else "**missed**"
        lines += ["", f"Median extra time from the slow host: wall {extra_wall:+.1f} s, work {extra_work:+.1f} s "
                      f"(target <= timeout_s = {args.timeout:g} s: {verdict}). Before the bounded fetcher the same URL "
                      "held the run for about 2,087 s (one byte per second; urllib's per-read timeout never fires)."]
    if ab:
        lines += ["", ab]
    body = "\n".join(lines)
    print(body)
    if args.write:
        print(f"wrote {update_results('hostile', body, PACKAGES)}")


if __name__ == "__main__":
    main()
