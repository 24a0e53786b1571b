"""Data users already have and where they keep it (issue 14, item 8).

    .venv/bin/python bench/storage.py                 # (b) N = 10,000, writes the `storage` section of bench/RESULTS.md
    .venv/bin/python bench/storage.py --n 2000 --no-write
    .venv/bin/python bench/storage.py --s3 --n 2000   # (a) and (c), writes the `storage-s3` section

--s3: starts a moto_server on 127.0.0.1 and (a) runs `curate run download_only -o s3://...` and img2dataset
with `output_folder=s3://...` (s3fs) on the same URLs, printing the wall-time ratio; (c) runs download_only
to S3 with 2, 8 and 32 shards of the same rows and prints the peak memory of each run's process tree.

Without --s3, (b):

What it does, in one invocation:
  1. makes a pool of distinct JPEGs (bench/download.py's make_pool) and serves it with
     curate.demo.server.DemoServer on 127.0.0.1; writes N distinct URLs (`?n=i`);
  2. `curate run download_only` over the URLs -> DL/ (the "re-download" side, and the tars to re-curate);
  3. stops the server, then `curate run` with `input.format: webdataset` and a `load_image` stage over
     DL/shards -> RE/ (the "re-curate from existing tars" side: no network at all);
  4. prints wall time (whole subprocess, Ray start-up included) and work time (manifest timings: split +
     segment0) of each side, and their ratio; checks RE kept exactly the samples DL kept.
Both sides run with Ray num_cpus=2 and N/4 samples per part.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from _common import REPO, bench_env, update_results  # noqa: E402
from download import make_pool, write_urls  # noqa: E402

PACKAGES = ["curate", "ray", "pyarrow", "img2dataset", "pillow"]

RECURATE = """name: recurate
input: {{format: webdataset}}
output: {{samples_per_shard: {per}}}
ray: {{num_cpus: 2}}
stages:
  - load_image: {{}}
"""


def curate_run(recipe: str, inp: Path, out: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "curate.cli", "run", recipe, "-i", str(inp), "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=bench_env(), capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["timings"]
    work = t.get("split", 0) + sum(v for k, v in t.items() if k.startswith("segment"))
    return {"wall": wall, "work": work, "kept": manifest["counts"]["kept"], "rows": manifest["counts"]["rows"]}


# ----------------------------------------------------------------------------------------------------------
# (a) writing to an S3-compatible server, (c) peak memory vs number of shards: `--s3`


def moto_server(work: Path):
    """A moto_server (moto[server]) on a free loopback port; returns (process, AWS_* environment).
    The same start-up as the storage tests' (tests/storage/moto.py)."""
    from tests.storage.moto import start_moto_server

    try:
        return start_moto_server(timeout=120, key="bench")
    except RuntimeError as err:
        raise SystemExit(str(err)) from None


def s3_bench(args, work: Path) -> str:
    """(a) download_only -> s3:// vs img2dataset -> s3:// (s3fs), same URLs; (c) peak memory of the
    download_only run tree for 2, 8 and 32 shards of the same N rows. Returns the RESULTS.md body."""
    import os

    import fsspec

    import download as dl_bench
    from curate.demo.server import DemoServer

    moto, s3env = moto_server(work)
    os.environ.update(s3env)
    dl_bench.ENV.update({**bench_env(), **s3env})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("bench")
    names = make_pool(work / "root" / "files", args.pool)
    rows = []
    try:
        with DemoServer(work / "root") as srv:
            urls = work / f"urls-s3-{args.n}.parquet"
            write_urls(urls, srv.url, names, args.n)
            # (a): both with bench/download.py's settings (256 px center_crop, jpg q95, 32 threads, 2 processes)
            cur = dl_bench.measure(_curate_cmd(urls, "s3://bench/curate", dl_bench.SETTINGS["samples_per_shard"]),
                                   work / "s3-curate.log", srv.pid, 0.2)
            cur["kept"] = json.loads(fs.cat_file("bench/curate/manifest.json"))["counts"]["kept"]
            timing = work / "s3-i2d.timing.json"
            cfg = {"urls": str(urls), "out": "s3://bench/i2d", "timing": str(timing)}
            i2d = dl_bench.measure([sys.executable, str(BENCH / "download.py"), "--_img2dataset", json.dumps(cfg)],
                                   work / "s3-i2d.log", None, 0.2)
            i2d["kept"] = sum(json.loads(fs.cat_file(p))["successes"] for p in fs.glob("bench/i2d/*_stats.json"))
            # (c)
            for shards in args.shards:
                r = dl_bench.measure(_curate_cmd(urls, f"s3://bench/mem{shards}", max(1, args.n // shards)),
                                     work / f"s3-mem{shards}.log", None, 0.2)
                got = len(fs.glob(f"bench/mem{shards}/shards/*.tar"))
                rows.append((shards, got, r["rss_mb"], r["pss_mb"], r["wall_s"]))
    finally:
        moto.terminate()
    ratio = i2d["wall_s"] / cur["wall_s"]
    print(f"(a) curate -> s3: {cur['wall_s']:.1f} s kept {cur['kept']}; img2dataset -> s3: {i2d['wall_s']:.1f} s "
          f"kept {i2d['kept']}; ratio img2dataset/curate {ratio:.2f}x; CPU s curate {cur['tree_cpu_s']:.1f} "
          f"img2dataset {i2d['tree_cpu_s']:.1f}")
    for r in rows:
        print(f"(c) {r[0]} shards asked, {r[1]} written: peak tree RSS {r[2]:.0f} MB, PSS {r[3]:.0f} MB, {r[4]:.1f} s")
    load = Path("/proc/loadavg").read_text().split()[0]
    mem = "\n".join(f"| {a} | {b} | {c:.0f} | {d:.0f} | {e:.1f} |" for a, b, c, d, e in rows)
    shards = f" --shards {' '.join(map(str, args.shards))}" if args.shards != [2, 8, 32] else ""
    return f"""Command: `.venv/bin/python bench/storage.py --s3 --n {args.n}{shards}`

Writes go to a moto_server (moto[server], an S3-compatible HTTP server) on 127.0.0.1; the images come
from a loopback DemoServer ({args.pool} distinct JPEGs, `?n=i` URLs). Both sides use bench/download.py's
settings (256 px center_crop, jpg q95, timeout 10, retries 0, 32 threads, 2 processes / Ray num_cpus=2).
*wall s* is the whole subprocess (interpreter and Ray start-up included). Ran
{time.strftime('%Y-%m-%d %H:%M')}, load1 at the end {load}: the 2 cores were shared with other jobs,
so absolute times are noisy.

(a) writing {args.n:,} downloads to the S3 server

| side | wall s | CPU s (tree) | peak tree RSS MB | kept | load1 before/after |
|---|---|---|---|---|---|
| `curate run download_only -o s3://bench/curate` | {cur['wall_s']:.1f} | {cur['tree_cpu_s']:.1f} | {cur['rss_mb']:.0f} | {cur['kept']:,} | {cur['load_before']:.1f}/{cur['load_after']:.1f} |
| img2dataset `output_folder=s3://bench/i2d` (s3fs) | {i2d['wall_s']:.1f} | {i2d['tree_cpu_s']:.1f} | {i2d['rss_mb']:.0f} | {i2d['kept']:,} | {i2d['load_before']:.1f}/{i2d['load_after']:.1f} |

Ratio img2dataset / curate wall time: **{ratio:.2f}x** (above 1 means curate is faster); CPU seconds
img2dataset / curate: **{i2d['tree_cpu_s'] / cur['tree_cpu_s']:.2f}x** (less distorted by the load).

""" + (f"""
(c) peak memory of the same download_only run to S3 by number of shards (samples_per_shard = N / shards)

| shards asked | shards written | peak tree RSS MB | peak tree PSS MB | wall s |
|---|---|---|---|---|
{mem}
""" if rows else "")


def _curate_cmd(urls: Path, out: str, per: int) -> list[str]:
    import download as dl_bench

    st = dl_bench.SETTINGS
    cmd = [sys.executable, "-m", "curate.cli", "run", "download_only", "-i", str(urls), "-o", out]
    for k, v in (("download.threads", st["threads"]), ("download.image_size", st["image_size"]),
                 ("download.resize_mode", st["resize_mode"]), ("download.encode_format", st["encode_format"]),
                 ("download.encode_quality", st["encode_quality"]), ("download.timeout_s", st["timeout"]),
                 ("download.retries", st["retries"]), ("ray.num_cpus", st["processes"]),
                 ("output.samples_per_shard", per)):
        cmd += ["--set", f"{k}={v}"]
    return cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--work", default=str(BENCH / "out" / "storage"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--s3", action="store_true", help="(a) and (c): writes to a loopback S3 server instead of (b)")
    ap.add_argument("--shards", type=int, nargs="*", default=[2, 8, 32],
                    help="(c): shard counts to measure (default 2 8 32; none: (a) only)")
    ap.add_argument("--section", default=None, help="bench/RESULTS.md section (default storage / storage-s3)")
    args = ap.parse_args()
    if args.s3:
        body = s3_bench(args, Path(args.work))
        if not args.no_write:
            print(f"wrote {update_results(args.section or 'storage-s3', body, PACKAGES + ['s3fs', 'moto'])}")
        return

    from curate.demo.server import DemoServer

    work = Path(args.work)
    shutil.rmtree(work / "dl", ignore_errors=True)
    shutil.rmtree(work / "re", ignore_errors=True)
    names = make_pool(work / "root" / "files", args.pool)
    per = max(1, args.n // 4)
    with DemoServer(work / "root") as srv:
        urls = work / f"urls-{args.n}.parquet"
        write_urls(urls, srv.url, names, args.n)
        dl = curate_run("download_only", urls, work / "dl",
                        [f"output.samples_per_shard={per}", "ray.num_cpus=2"])
    # the server is gone: re-curating reads the tars only
    recipe = work / "recurate.yaml"
    recipe.write_text(RECURATE.format(per=per))
    re_ = curate_run(str(recipe), work / "dl" / "shards", work / "re", [])
    if re_["kept"] != dl["kept"]:
        raise SystemExit(f"re-curating kept {re_['kept']} samples, the download kept {dl['kept']}")
    ratio_wall, ratio_work = dl["wall"] / re_["wall"], dl["work"] / max(re_["work"], 1e-9)
    print(f"re-download: wall {dl['wall']:.1f} s, work {dl['work']:.1f} s, kept {dl['kept']}/{dl['rows']}")
    print(f"re-curate:   wall {re_['wall']:.1f} s, work {re_['work']:.1f} s, kept {re_['kept']}/{re_['rows']}")
    print(f"ratio re-download/re-curate: {ratio_wall:.2f}x wall, {ratio_work:.2f}x work")
    if args.no_write:
        return
    load = Path("/proc/loadavg").read_text().split()[0]
    body = f"""Command: `.venv/bin/python bench/storage.py --n {args.n}`

(b) re-curating {args.n:,} samples from existing tars (`input.format: webdataset` + `load_image`, server stopped)
vs re-downloading them (`download_only`: image_size 256 center_crop, 32 threads) from a loopback
DemoServer ({args.pool} distinct JPEGs, `?n=i` URLs). Ray num_cpus=2, {per:,} samples per part; the server
shares the same cores. *work s* = manifest timings split + segment0 (no interpreter/Ray start-up).
Ran {time.strftime('%Y-%m-%d %H:%M')}, load1 at the end {load} (the machine is shared: absolute times are
noisy, the ratio less so).

| side | wall s | work s | kept / rows |
|---|---|---|---|
| re-download | {dl['wall']:.1f} | {dl['work']:.1f} | {dl['kept']:,} / {dl['rows']:,} |
| re-curate from tars | {re_['wall']:.1f} | {re_['work']:.1f} | {re_['kept']:,} / {re_['rows']:,} |

Ratio re-download / re-curate: **{ratio_wall:.2f}x** wall, **{ratio_work:.2f}x** work.
"""
    print(f"wrote {update_results(args.section or 'storage', body, PACKAGES)}")


if __name__ == "__main__":
    main()
