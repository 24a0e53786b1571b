"""Data users already have: re-curating N samples from existing tars vs re-downloading them (issue 14, 8b).

    .venv/bin/python bench/storage.py                 # N = 10,000, writes the `storage` section of bench/RESULTS.md
    .venv/bin/python bench/storage.py --n 2000 --no-write

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--work", default=str(BENCH / "out" / "storage"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

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
    print(f"wrote {update_results('storage', body, PACKAGES)}")


if __name__ == "__main__":
    main()
