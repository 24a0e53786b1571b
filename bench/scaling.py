"""How the image-text recipe's cost grows with rows: wall, CPU and peak RSS of the whole process tree.

    .venv/bin/python bench/scaling.py --sizes 10000 100000        # writes the scaling-image-text section
    .venv/bin/python bench/scaling.py --sizes 2000 --no-write

For each N: `curate run image_text` (pipelines/image_text.yaml: download 64 px, image_size, caption_text,
exact_dedup, phash_dedup; 1,000 samples per shard; local Ray num_cpus=2) over N loopback URLs from
bench/download.py's corpus (a pool of distinct JPEGs served by curate.demo.server.DemoServer, `?n=i` makes
each URL distinct). Every URL of one pool image returns the same bytes, so exact_dedup drops all but one
row per pool image and phash_dedup then sees only --pool rows: the dedup jobs' share of the cost is low
here (the minhash_dedup rows of the same table, in the dedup section, measure a job at scale). Sizes that
were not run get wall and CPU extrapolated linearly from the two largest measured ones, marked as such
(not memory: it is bounded by the parts in flight, not by N).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from _common import bench_env, update_results  # noqa: E402

import download as dl  # noqa: E402

PACKAGES = ["curate", "ray", "pyarrow", "img2dataset", "pillow"]


def run_one(urls: Path, out: Path, work: Path, server_pid: int) -> dict:
    cmd = [sys.executable, "-m", "curate.cli", "run", "image_text", "-i", str(urls), "-o", str(out),
           "--set", "ray.num_cpus=2"]
    r = dl.measure(cmd, work / f"{out.name}.log", server_pid, 0.5)
    manifest = json.loads((out / "manifest.json").read_text())
    r["kept"], r["rows"] = manifest["counts"]["kept"], manifest["counts"]["rows"]
    r["timings"] = manifest.get("timings", {})
    return r


def extrapolate(points: list[tuple[int, float]], n: int) -> float:
    """Linear in N through the two largest measured points (fixed cost + cost per row)."""
    (n0, y0), (n1, y1) = sorted(points)[-2:]
    slope = (y1 - y0) / (n1 - n0)
    return y1 + slope * (n - n1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--extrapolate", type=int, nargs="*", default=[100000, 1000000],
                    help="sizes to extrapolate when not measured (default 100000 1000000)")
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--work", type=Path, default=BENCH / "out" / "scaling")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    dl.ENV.update(bench_env())
    from curate.demo.server import DemoServer

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    names = dl.make_pool(work / "root" / "files", args.pool)
    rows = []
    with DemoServer(work / "root") as srv:
        for n in sorted(args.sizes):
            urls = work / f"urls-{n}.parquet"
            dl.write_urls(urls, srv.url, names, n)
            out = work / f"run-{n}"
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            r = run_one(urls, out, work, srv.pid)
            r["n"] = n
            rows.append(r)
            print(f"N={n:,}: wall {r['wall_s']:.1f}s, CPU {r['tree_cpu_s']:.1f}s, peak tree RSS {r['rss_mb']:.0f} MB "
                  f"(PSS {r['pss_mb']:.0f}), kept {r['kept']:,}/{r['rows']:,}, load1 {r['load_before']:.1f}/"
                  f"{r['load_after']:.1f}, timings {r['timings']}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    lines = ["| rows | wall s | CPU s (tree) | CPU ms/row | peak tree RSS MB | peak tree PSS MB | kept | load1 before/after | measured? |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['wall_s']:.1f} | {r['tree_cpu_s']:.1f} | {1000 * r['tree_cpu_s'] / r['n']:.2f} | "
                     f"{r['rss_mb']:.0f} | {r['pss_mb']:.0f} | {r['kept']:,} | {r['load_before']:.1f}/{r['load_after']:.1f} | yes |")
    if len(rows) >= 2:
        for n in args.extrapolate:
            if n in {r["n"] for r in rows}:
                continue
            # wall and CPU only: memory is bounded by the parts in flight, not by N, so a line through it means nothing
            est = {k: extrapolate([(r["n"], r[k]) for r in rows], n) for k in ("wall_s", "tree_cpu_s")}
            lines.append(f"| {n:,} | ~{est['wall_s']:.0f} | ~{est['tree_cpu_s']:.0f} | | | | | | "
                         "no: wall and CPU linear from the two largest measured |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.no_write:
        return
    body = f"""Command: `.venv/bin/python bench/scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}`

`curate run image_text` (pipelines/image_text.yaml: download at 64 px, image_size, caption_text, exact_dedup,
phash_dedup; 1,000 samples per shard; local Ray, num_cpus=2) over N loopback URLs ({args.pool} distinct JPEGs
served by DemoServer on 127.0.0.1, `?n=i` URLs, the server on the same 2 cores). Wall and CPU are the whole
`curate run` process tree (interpreter, Ray start-up and shutdown included; the server's CPU is not), peak
RSS/PSS summed over the tree. Each URL of one pool image returns the same bytes, so exact_dedup keeps one
row per pool image and phash_dedup sees only those: the dedup jobs' share is low here. Ran
{time.strftime('%Y-%m-%d %H:%M')} on the shared machine (load1 per row: wall times stretch with it, CPU s much less).

{table}
"""
    print(f"wrote {update_results('scaling-image-text', body, PACKAGES)}")


if __name__ == "__main__":
    main()
