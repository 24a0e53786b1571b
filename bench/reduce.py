"""`reduce` job benchmark: wall time per phase on N random unit vectors (default 100k x 512) in this process,
the same code path as a small run's driver (fit on the bounded sample -> prepare -> per-cluster ranking ->
allocation). Usage: python bench/reduce.py [--rows 100000] [--dim 512] [--clusters 100] [--fraction 0.25]
[--json OUT.json] [--results] (--results writes the `reduce` section of bench/RESULTS.md).
Random vectors have no cluster structure, so k-means runs all its iterations: a worst case.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def table(rows: int, dim: int, seed: int = 0) -> pa.Table:
    from curate import schema
    from curate.reduce.job import Reduce

    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim).cast(pa.list_(pa.float32()))
    t = pa.table({"uid": [f"u{i:08d}" for i in range(rows)], "part": pa.array(np.arange(rows) // 10_000, pa.int32()),
                  "clip_image_embedding": emb, "status": ["ok"] * rows})
    return schema.conform(t, schema.run_schema({"clip_image_embedding": pa.list_(pa.float32()), **Reduce.writes}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--allocation", default="proportional")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--results", action="store_true", help="write the `reduce` section of bench/RESULTS.md")
    args = ap.parse_args()

    from curate.reduce.job import Reduce
    from curate.reduce.vectors import unit_vectors
    from curate.stage import apply_decisions, fit_sample, prepare_records, reduce_records

    t = table(args.rows, args.dim)
    job = Reduce(fraction=args.fraction, clusters=args.clusters, allocation=args.allocation)
    secs, cpu = {}, {}
    t0, c0 = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal t0, c0
        secs[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()

    unit_vectors(t, job.column)
    lap("read_vectors")
    fitted = job.fit(fit_sample(job, [t]))
    lap("fit_kmeans")
    records = pa.concat_tables([prepare_records(fitted, t.slice(lo, 10_000)) for lo in range(0, t.num_rows, 10_000)])
    lap("prepare_assign")
    ranked = reduce_records(fitted, records)
    lap("rank_in_clusters")
    decisions = fitted.finalize(ranked)
    lap("allocate_select")
    out = apply_decisions(t, fitted, decisions)
    kept = out.column("status").to_pylist().count("ok")
    result = {"rows": args.rows, "dim": args.dim, "clusters": int(len(fitted._centroids)), "fraction": args.fraction,
              "allocation": args.allocation, "kept": kept,
              "wall_s": {k: round(v, 2) for k, v in secs.items()}, "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
              "job_wall_s": round(sum(secs.values()) - secs["read_vectors"], 2),
              "job_cpu_s": round(sum(cpu.values()) - cpu["read_vectors"], 2),
              "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1)}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.results:
        write_results(result, sys.argv[1:])


def write_results(r: dict, argv: list[str]) -> None:
    from _common import update_results

    rows = "\n".join(f"| {k} | {r['cpu_s'][k]} | {r['wall_s'][k]} |" for k in r["wall_s"])
    body = (f"Command: `.venv/bin/python bench/reduce.py {' '.join(argv)}`\n\n"
            f"`reduce` job in one process (the driver path) on {r['rows']:,} random unit vectors of {r['dim']} "
            f"dimensions: fraction {r['fraction']}, {r['allocation']} allocation, {r['clusters']} k-means clusters "
            f"(fit on all rows: the fit-sample cap is 100k), rank_by centre; kept {r['kept']:,}. Load average "
            f"(1 min) at the end: {r['load_avg_1m']} on {r['cpus']} CPUs, so CPU seconds estimate an idle "
            f"machine's wall time better than the wall seconds.\n\n"
            f"| phase | CPU s | wall s |\n|---|---|---|\n{rows}\n"
            f"| **job (all but read_vectors)** | **{r['job_cpu_s']}** | **{r['job_wall_s']}** |")
    update_results("reduce", body, ["numpy", "pyarrow", "scipy"])


if __name__ == "__main__":
    main()
