"""Ray's fixed cost in a local curate run: processes, their memory, seconds to the first batch, CPU seconds.

    .venv/bin/python bench/ray_overhead.py                  # 3 runs each way, writes the ray-overhead section
    .venv/bin/python bench/ray_overhead.py --repeat 1 --no-write

Each run is a fresh interpreter (like `curate run`) that enters curate.runner.ray_session exactly as the
runner does (a local Ray, num_cpus=2) and pulls the first row out of a Ray Data pipeline shaped like a
segment (from_items over 4 parts -> map_batches -> map_batches -> iter_rows), then drains it, snapshots
its process tree and leaves the session. "before" is the same code with CURATE_RAY_LEAN=0 (Ray started
as ray.init(include_dashboard=False) does), "after" the default lean start (curate/lean_ray.py). Runs
alternate before/after so both see the same load. Reported per run: seconds from process start to
import done / Ray up / first row / session closed, CPU seconds of the whole process tree (user+sys,
sampled per process; robust to the load, unlike wall time), and the processes alive after the first
batch with their RSS and PSS. "helpers" = every process of the tree except the driver (the batches do
no work, so all of it is fixed cost); "not-worker" leaves out the worker processes too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from _common import REPO, CpuMeter, TreeSampler, bench_env, process_label, update_results  # noqa: E402

PACKAGES = ["curate", "ray", "pyarrow"]
TIMEOUTS: dict[str, int] = {}  # Ray starts that timed out (raylet not registered within Ray's fixed 30 s), per side


def _probe(out: str) -> None:
    """The measured child: time to each milestone and the tree after the first batch, as JSON in `out`."""
    t0 = time.time()
    import psutil

    from curate import runner

    t_import = time.time() - t0
    me = psutil.Process()
    with runner.ray_session(None, 2) as ray:
        t_ray = time.time() - t0
        ds = ray.data.from_items([{"part": k} for k in range(4)], override_num_blocks=4)
        ds = ds.map_batches(lambda b: b, batch_size=None, batch_format="pyarrow")
        ds = ds.map_batches(lambda b: b, batch_size=None, batch_format="pyarrow")
        rows = iter(ds.iter_rows())
        next(rows)
        t_first = time.time() - t0
        sum(1 for _ in rows)
        time.sleep(1.0)  # let idle helpers settle
        procs = []
        for p in [me] + me.children(recursive=True):
            try:
                m = p.memory_full_info()
                procs.append({"label": "driver" if p.pid == me.pid else process_label(p), "rss": m.rss, "pss": m.pss})
            except psutil.Error:
                pass
        t_closing = time.time()
    Path(out).write_text(json.dumps({"import_s": t_import, "ray_s": t_ray, "first_s": t_first,
                                     "shutdown_s": time.time() - t_closing, "procs": procs}))


def one_run(mode: str, work: Path, k: int, attempt: int = 1) -> dict:
    out = work / f"{mode}-{k}.json"
    env = bench_env(CURATE_RAY_LEAN="1" if mode == "after" else "0")
    env.pop("RAY_ADDRESS", None)
    with CpuMeter() as cpu:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_probe", str(out)], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, interval=0.2).start()
        log, _ = proc.communicate()
        wall = time.time() - t0
        sampler.stop()
    if proc.returncode != 0:
        text = log.decode(errors="replace")
        if "timed out during startup" in text and attempt < 6:  # Ray gives a raylet 30 s to register
            print(f"    ({mode}: Ray start timed out at load1 {os.getloadavg()[0]:.1f}; again)", flush=True)
            TIMEOUTS[mode] = TIMEOUTS.get(mode, 0) + 1
            return one_run(mode, work, k, attempt + 1)
        raise SystemExit(f"probe ({mode}) failed:\n{text[-3000:]}")
    r = json.loads(out.read_text())
    helpers = [p for p in r["procs"] if p["label"] != "driver"]
    # Ray's own processes: not the driver, not the num_cpus workers that run the stages' tasks
    own = [p for p in helpers if not p["label"].startswith("ray worker")]
    r.update(mode=mode, wall_s=wall, cpu_s=sampler.cpu_s, peak_rss_mb=sampler.peak_rss / 2**20,
             helpers=len(helpers), helper_rss_mb=sum(p["rss"] for p in helpers) / 2**20,
             helper_pss_mb=sum(p["pss"] for p in helpers) / 2**20, own=len(own),
             own_rss_mb=sum(p["rss"] for p in own) / 2**20, own_pss_mb=sum(p["pss"] for p in own) / 2**20, load=cpu.load0[0], load_after=cpu.load1[0],
             breakdown=sampler.breakdown(), attempt=attempt)
    return r


def kinds(r: dict) -> str:
    agg: dict[str, list] = {}
    for p in r["procs"]:
        a = agg.setdefault(p["label"], [0, 0, 0])
        a[0] += 1
        a[1] += p["rss"] / 2**20
        a[2] += p["pss"] / 2**20
    return "; ".join(f"{lab} x{n}: {rss:.0f}/{pss:.0f}" for lab, (n, rss, pss) in sorted(agg.items(), key=lambda x: -x[1][1]))


def cpu_kinds(r: dict) -> str:
    return "; ".join(f"{label} x{k}: {c:.1f}" for label, k, c, _ in r["breakdown"] if c >= 0.1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per side, alternating (default 3)")
    ap.add_argument("--work", type=Path, default=BENCH / "out" / "ray_overhead")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    one_run("after", args.work, 0)  # unmeasured: fills the bytecode cache (bench_env) for both sides
    runs = []
    for k in range(1, args.repeat + 1):
        for mode in (("before", "after") if k % 2 else ("after", "before")):
            r = one_run(mode, args.work, k)
            runs.append(r)
            print(f"{mode:6s} run {k}: ray up {r['ray_s']:.1f}s, first row {r['first_s']:.1f}s, wall {r['wall_s']:.1f}s, "
                  f"CPU {r['cpu_s']:.1f}s, {r['helpers']} helper processes {r['helper_rss_mb']:.0f} MB RSS / "
                  f"{r['helper_pss_mb']:.0f} MB PSS (load1 {r['load']:.1f})", flush=True)
    med = lambda mode, key: statistics.median(r[key] for r in runs if r["mode"] == mode)
    keys = [("ray_s", "s to Ray up"), ("first_s", "s to first row"), ("wall_s", "wall s"), ("cpu_s", "CPU s (tree)"),
            ("helpers", "helper processes"), ("helper_rss_mb", "helper RSS MB"), ("helper_pss_mb", "helper PSS MB"),
            ("own", "of which not workers"), ("own_rss_mb", "not-worker RSS MB"), ("own_pss_mb", "not-worker PSS MB"),
            ("peak_rss_mb", "peak tree RSS MB")]
    lines = ["| measure (median) | before | after | after/before |", "|---|---|---|---|"]
    for key, name in keys:
        b, a = med("before", key), med("after", key)
        lines.append(f"| {name} | {b:.1f} | {a:.1f} | {a / b:.2f} |")
    summary = "\n".join(lines)
    per_run = ["| side | run | s to import | s to Ray up | s to first row | shutdown s | wall s | CPU s | helpers | "
               "helper RSS MB | helper PSS MB | load1 before/after |", "|" + "---|" * 12]
    for r in runs:
        per_run.append(f"| {r['mode']} | {runs.index(r) // 2 + 1} | {r['import_s']:.1f} | {r['ray_s']:.1f} | {r['first_s']:.1f} | "
                       f"{r['shutdown_s']:.1f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['helpers']} | "
                       f"{r['helper_rss_mb']:.0f} | {r['helper_pss_mb']:.0f} | {r['load']:.1f}/{r['load_after']:.1f} |")
    last = {m: next(r for r in reversed(runs) if r["mode"] == m) for m in ("before", "after")}
    body = f"""Command: `.venv/bin/python bench/ray_overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}`

A fresh interpreter enters curate.runner.ray_session as `curate run` does (local Ray, num_cpus=2) and pulls
the first row out of a segment-shaped Ray Data pipeline (4 parts, two map_batches), then drains it. *before* =
CURATE_RAY_LEAN=0 (Ray started as `ray.init(include_dashboard=False)` does, Ray Data as it ships), *after* =
the default lean start (curate/lean_ray.py: fewer Ray processes, and Ray Data's stats and
autoscaling-coordinator actors kept in the driver). Times are seconds from process start; CPU s is user+sys of the whole process tree;
helpers = every process but the driver, after the first batch (RSS counts shared pages once per process,
PSS splits them); *not-worker* = helpers less the `ray::IDLE`/task worker processes (Ray's own daemons and
Ray Data's two actors where they run; the workers are the num_cpus processes a run's stages execute in). Runs alternate sides; ran {time.strftime('%Y-%m-%d %H:%M')} on the shared 2-core machine
(load1 in the table: wall times are dominated by the load, CPU s and memory much less).

{summary}

{chr(10).join(per_run)}

Ray starts that timed out and were retried (Ray gives the raylet a fixed 30 s to register; at a load of
40-60 on 2 cores that is sometimes not enough): before {TIMEOUTS.get('before', 0)}, after {TIMEOUTS.get('after', 0)}.

CPU seconds per kind of process, last run of each side:

- before: {cpu_kinds(last['before'])}
- after: {cpu_kinds(last['after'])}

Processes after the first batch, last run of each side (label xN: RSS/PSS MB):

- before: {kinds(last['before'])}
- after: {kinds(last['after'])}
"""
    print("\n" + summary)
    if not args.no_write:
        print(f"wrote {update_results('ray-overhead', body, PACKAGES)}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_probe":
        _probe(sys.argv[2])
    else:
        main()
