"""What a row that kills its worker process costs (curate/crash_isolation.py): `curate run` of a recipe whose one
stage segfaults on marked rows, in one part of N rows, with k = 0, 1, 2 such rows, on a task stage and on a
model (actor) stage; and what the crash markers cost a stage call when nothing dies.

    .venv/bin/python bench/crash_isolation.py           # N = 1,000, k 0 1 2, task + model: RESULTS.md + JSON
    .venv/bin/python bench/crash_isolation.py --quick   # N = 32, k 0 1, task stage, no writing (the test's run)
    .venv/bin/python bench/crash_isolation.py --record bench/results/crash-isolation.json   # section from a JSON

(a) Each run is a fresh `curate run` subprocess with its own local Ray (2 CPUs), on a generated Parquet of N
captions; a crashing row has the caption "poison", and bench/crash_plugin's stage kills its process on any
batch holding one (a real SIGSEGV, as tests/hostile/test_worker_crash.py's stage). Printed per run: wall
seconds (the whole subprocess), work seconds (the manifest's split + segment timings, without Ray's
start-up), worker deaths (the range markers the deaths left under `_work/crashes/`, kept with
output.keep_work; checked against the stage's own log of the pids it killed), rows kept and failed (every
row must be accounted for: the crashing rows `failed/stage_crashed`, alone, and every other row kept, or the
bench exits non-zero), and the slowdown against k = 0 of the same stage kind.

(b) The markers without deaths: the stage's `run` on a part of N rows, in this process, as the runner calls
it (a CrashWatch built for the part, so `isolate` writes the range marker and removes it) against the same
call unwatched, alternating blocks on the filesystem of the runs' output folder: ms per call, the ratio,
and the markers' share of a k = 0 run's work time; and the same watched call with the call's time bound
(the default row_timeout_s / call_timeout_s: a watchdog deadline set and cleared per call) as the runner
calls it now.

Why one script: the costs were measured once by hand (one crashing row in a 1000-row part: 11 deaths, 29.7 s
against 8.9 s); this records them with the machine and its load (bench/RESULTS.md, section crash-isolation).
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

from _common import REPO, bench_env, machine_info  # noqa: E402

PACKAGES = ["curate", "ray", "pyarrow"]
SECTION = "crash-isolation"
RESULTS_JSON = BENCH / "results" / "crash-isolation.json"
STAGES = {"task": "crash_plugin:CrashTask", "model": "crash_plugin:CrashModel"}
STAGE_NAMES = {"task": "bench_crash_task", "model": "bench_crash_model"}


def crasher_rows(n: int, k: int) -> list[int]:
    """k rows spread over the part (k = 1: the middle), so that each crasher costs its own bisection."""
    return [i * n // (k + 1) for i in range(1, k + 1)]


def write_input(path: Path, n: int, crashers: list[int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = set(crashers)
    rows = [{"url": f"http://127.0.0.1:9/{i}.jpg", "caption": "poison" if i in bad else f"caption {i}"}
            for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows), path)


def count_markers(out: Path) -> dict[str, int]:
    """Range markers under the run's `_work/crashes/` (one per death: a call that returns or raises removes
    its own) and `passed` markers (calls that returned on a part after it had died)."""
    files = [p.name for p in (out / "_work" / "crashes").rglob("*.json")]
    return {"deaths": sum(f.endswith(".range.json") for f in files), "passed": sum(f.endswith(".passed.json") for f in files)}


def account(out: Path, n: int, crashers: list[int], stage: str) -> tuple[int, dict, str]:
    """(kept, failed by stage/reason, problem): every input row once in the metadata, the crashers failed
    alone as stage_crashed by `stage`, every other row ok; `problem` is "" when that holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = pa.concat_tables([pq.read_table(p, columns=["row", "status", "stage", "reason"])
                             for p in sorted((out / "meta").glob("*.parquet"))]).to_pylist()
    kept = sum(r["status"] == "ok" for r in meta)
    failed: dict[str, int] = {}
    for r in meta:
        if r["status"] == "failed":
            key = f"{r['stage']}/{r['reason']}"
            failed[key] = failed.get(key, 0) + 1
    rows = {r["row"]: r for r in meta}
    problem = ""
    if len(meta) != n or len(rows) != n:
        problem = f"{len(meta)} metadata rows ({len(rows)} distinct) for {n} input rows"
    elif any((rows[i]["status"], rows[i]["stage"], rows[i]["reason"]) != ("failed", stage, "stage_crashed")
             for i in crashers):
        problem = f"crashing rows not failed/stage_crashed: {[rows[i] for i in crashers]}"
    elif kept != n - len(crashers):
        problem = f"{kept} rows kept, expected {n - len(crashers)}"
    return kept, failed, problem


def run_once(kind: str, n: int, k: int, work: Path) -> dict:
    """One `curate run` of the bench stage on n rows with k crashing rows; its numbers and accounting."""
    run = work / f"{kind}-k{k}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    crashers = crasher_rows(n, k)
    deaths_log = run / "segfaults.txt"
    write_input(run / "rows.parquet", n, crashers)
    (run / "recipe.yaml").write_text(
        f"name: crash-bench\noutput: {{samples_per_shard: {n}, keep_work: true}}\nray: {{num_cpus: 2}}\n"
        f"stages:\n  - {STAGES[kind]}: {{deaths_log: {json.dumps(str(deaths_log))}}}\n")
    env = bench_env(PYTHONPATH=os.pathsep.join(
        [str(REPO), str(BENCH), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "curate.cli", "run", str(run / "recipe.yaml"), "-i", str(run / "rows.parquet"),
           "-o", str(run / "out")]
    load_before = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.time() - t0
    (run / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"curate run ({kind}, k={k}) failed ({proc.returncode}): {last} (log: {run / 'stderr.txt'})")
    manifest = json.loads((run / "out" / "manifest.json").read_text())
    timings = manifest.get("timings", {})
    work_s = sum(v for key, v in timings.items() if key == "split" or key.startswith("segment"))
    kept, failed, problem = account(run / "out", n, crashers, STAGE_NAMES[kind])
    segfaults = len(deaths_log.read_text().split()) if deaths_log.exists() else 0
    return {"stage": kind, "rows": n, "crashers": k, "crasher_rows": crashers, "wall_s": round(wall, 2),
            "work_s": round(work_s, 2), **count_markers(run / "out"), "segfaults": segfaults, "kept": kept,
            "failed": failed, "accounting_problem": problem, "status": manifest.get("status"),
            "load1_before": round(load_before, 2), "load1_after": round(os.getloadavg()[0], 2)}


def part_table(n: int):
    """A part of n active rows in the run schema, as the runner hands it to a stage."""
    import pyarrow as pa

    from curate import schema

    rows = [{"uid": f"{i:020x}", "source": "bench", "modality": "image-text", "part": 0, "row": i,
             "url": f"http://127.0.0.1:9/{i}.jpg", "text": f"caption {i}", "status": "ok"} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schema.run_schema({}))


def marker_cost(work: Path, n: int, calls: int, blocks: int) -> dict:
    """ms per stage call on a part of n rows with the crash markers on (a CrashWatch built per part, as
    runner._CrashSite.watch does, and the range marker written and removed) and off; blocks alternate
    which side goes first, and the median block is kept."""
    from crash_plugin import CrashTask

    from curate import crash_isolation

    folder = work / "markers" / "out" / "_work" / "crashes" / "segment0" / "part-000000"
    shutil.rmtree(work / "markers", ignore_errors=True)
    folder.mkdir(parents=True)
    stage, table = CrashTask(), part_table(n)

    def direct() -> None:
        with crash_isolation.watching(None):
            stage.run(table)

    def watched() -> None:
        with crash_isolation.watching(crash_isolation.CrashWatch(folder, "0-bench_crash_task", "bench", 48)):
            stage.run(table)

    def bounded() -> None:  # as the runner calls it now: markers and the call's time bound (the watchdog)
        watch = crash_isolation.CrashWatch(folder, "0-bench_crash_task", "bench", 48, crash_isolation.CallBound())
        with crash_isolation.watching(watch):
            stage.run(table)

    per = {"direct": [], "markers": [], "bounded": []}
    fns = {"direct": direct, "markers": watched, "bounded": bounded}
    for _ in range(3):  # warm-up: imports, the folder's first entries, the watchdog's thread
        direct(), watched(), bounded()
    for b in range(blocks):
        for side in (("direct", "markers", "bounded") if b % 2 == 0 else ("bounded", "markers", "direct")):
            fn = fns[side]
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            per[side].append(1e3 * (time.perf_counter() - t0) / calls)
    left = list(folder.iterdir())
    if left:
        raise SystemExit(f"markers left behind by calls that returned: {[p.name for p in left][:3]}")
    direct_ms, markers_ms = statistics.median(per["direct"]), statistics.median(per["markers"])
    return {"rows": n, "calls_per_block": calls, "blocks": blocks, "direct_ms": round(direct_ms, 4),
            "markers_ms": round(markers_ms, 4), "overhead_ms": round(markers_ms - direct_ms, 4),
            "ratio": round(markers_ms / direct_ms, 3), "folder": str(folder.relative_to(work)),
            "overhead_blocks_ms": sorted(round(m - d, 4) for d, m in zip(per["direct"], per["markers"])),
            "bounded_ms": round(statistics.median(per["bounded"]), 4),
            "watchdog_ms": round(statistics.median(per["bounded"]) - markers_ms, 4),
            "load1_after": round(os.getloadavg()[0], 2)}


def summarise(r: dict) -> None:
    """Add each run's slowdown against k = 0 of the same stage kind, and the extra seconds per death."""
    base = {x["stage"]: x for x in r["runs"] if x["crashers"] == 0}
    for x in r["runs"]:
        b = base.get(x["stage"])
        if b is None:
            continue
        x["wall_ratio"] = round(x["wall_s"] / b["wall_s"], 2)
        x["work_ratio"] = round(x["work_s"] / b["work_s"], 2) if b["work_s"] else None
        if x["deaths"]:
            x["extra_work_s_per_death"] = round((x["work_s"] - b["work_s"]) / x["deaths"], 2)
    m = r.get("markers")
    if m and base.get("task") and base["task"]["work_s"]:
        m["share_of_k0_work"] = round(m["overhead_ms"] / 1e3 / base["task"]["work_s"], 6)


def run_line(x: dict) -> str:
    ratio = f", slowdown wall {x['wall_ratio']:.2f}x work {x['work_ratio']:.2f}x" if "wall_ratio" in x else ""
    return (f"{x['stage']:5s} k={x['crashers']} ({x['rows']} rows): wall {x['wall_s']:.1f} s, work {x['work_s']:.1f} s, "
            f"deaths {x['deaths']} (stage's log {x['segfaults']}), kept {x['kept']}, failed {json.dumps(x['failed'])}"
            f"{ratio}, load1 {x['load1_before']:.1f}->{x['load1_after']:.1f}")


def markers_line(m: dict) -> str:
    return (f"markers on a {m['rows']}-row part: {m['markers_ms']:.3f} ms/call with, {m['direct_ms']:.3f} ms/call "
            f"without: +{m['overhead_ms']:.3f} ms/call, ratio {m['ratio']:.2f}"
            + (f"; with the call's time bound {m['bounded_ms']:.3f} ms/call (watchdog {m['watchdog_ms']:+.3f} ms)"
               if "bounded_ms" in m else ""))


def body(r: dict, source: str) -> str:
    """The RESULTS.md section (tables from the JSON; the machine line is update_results')."""
    s = r["settings"]
    loads = [x[k] for x in r["runs"] for k in ("load1_before", "load1_after")]
    lines = [f"Command: `{' '.join(['python bench/crash_isolation.py', *r['argv']])}` (results JSON: {source}). One run of "
             "each: a fresh `curate run` subprocess with its own local Ray (ray.num_cpus 2) on one part of "
             f"{s['rows']:,} generated rows, the bench stage (bench/crash_plugin: no work per row) segfaulting on "
             "any batch that holds a crashing row. *work s* = manifest timings (split + segments), without Ray's "
             "start-up; *deaths (markers)* = range markers the deaths left under `_work/crashes/` (output.keep_work), "
             "*deaths (stage's log)* = pids the stage wrote just before each segfault, as a check. Every row was "
             "accounted for in each run (the bench checks the metadata): the crashing rows failed/stage_crashed "
             f"alone, all others kept. Load average (1 min) during the runs: "
             f"{min(loads):.1f}-{max(loads):.1f} on {r['machine']['nproc']} cores, shared with other jobs.", "",
             "| stage | crashing rows | wall s | work s | deaths (markers) | deaths (stage's log) | kept | failed | "
             "slowdown wall | slowdown work | extra work s / death | load1 before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        failed = ", ".join(f"{k} {v}" for k, v in x["failed"].items()) or "-"
        lines.append(f"| {x['stage']} | {x['crashers']} | {x['wall_s']:.1f} | {x['work_s']:.1f} | {x['deaths']} | "
                     f"{x['segfaults']} | {x['kept']:,} | {failed} | {x.get('wall_ratio', 0):.2f} | "
                     f"{x.get('work_ratio') or 0:.2f} | {x.get('extra_work_s_per_death', '-')} | "
                     f"{x['load1_before']:.1f} / {x['load1_after']:.1f} |")
    m = r.get("markers")
    if m:
        share = f"; {100 * m['share_of_k0_work']:.3f}% of the k = 0 task run's work time" if "share_of_k0_work" in m else ""
        lines += ["", f"Markers without deaths (the stage's `run` on a {m['rows']:,}-row part in one process, with a "
                      f"CrashWatch per call as the runner builds per part vs unwatched; median of {m['blocks']} "
                      f"alternating blocks of {m['calls_per_block']} calls, on the output folder's filesystem): "
                      f"**{m['markers_ms']:.3f}** vs {m['direct_ms']:.3f} ms per call, **+{m['overhead_ms']:.3f} ms** "
                      f"per stage call on a part (ratio {m['ratio']:.2f} on a stage that does no work){share}"
                      + (f"; the overhead in each block: {m['overhead_blocks_ms'][0]:.3f}-{m['overhead_blocks_ms'][-1]:.3f} ms"
                         if m.get("overhead_blocks_ms") else "")
                      + (f". With the call's time bound as well (row_timeout_s / call_timeout_s: the watchdog's "
                         f"deadline set and cleared per call): {m['bounded_ms']:.3f} ms per call, "
                         f"**{m['watchdog_ms']:+.3f} ms** for the bound." if "bounded_ms" in m else ".")]
    return "\n".join(lines)


def record(r: dict, source: str) -> Path:
    """Write bench/RESULTS.md's crash-isolation section from one run's results, with that run's machine."""
    from bench._common import update_results  # the module tests/test_bench_crash_isolation.py points elsewhere

    return update_results(SECTION, body(r, source), PACKAGES, info=r["machine"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1000, help="rows in the one part (default 1000)")
    p.add_argument("--crashers", type=int, nargs="+", default=[0, 1, 2], help="crashing rows per run (default 0 1 2)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="stage kinds (default both)")
    p.add_argument("--marker-calls", type=int, default=200, help="stage calls per block in (b) (default 200)")
    p.add_argument("--marker-blocks", type=int, default=7, help="alternating blocks in (b) (default 7)")
    p.add_argument("--quick", action="store_true", help="32 rows, k 0 1, task stage, small (b); no writing")
    p.add_argument("--work", type=Path, default=BENCH / "out" / "crash_isolation", help="scratch folder (wiped first)")
    p.add_argument("--json", type=Path, help="results file (default WORK/results.json)")
    p.add_argument("--write", dest="write", action="store_true", default=None,
                   help=f"write RESULTS.md's {SECTION} section and {RESULTS_JSON.relative_to(REPO)} (default unless --quick)")
    p.add_argument("--no-write", dest="write", action="store_false")
    p.add_argument("--record", type=Path, metavar="RESULTS_JSON", help="only write the RESULTS.md section from it")
    a = p.parse_args(argv)
    if a.record:
        print(f"wrote {record(json.loads(a.record.read_text()), str(a.record))}")
        return {}
    if a.quick:
        a.rows, a.crashers, a.stages, a.marker_calls, a.marker_blocks = 32, [0, 1], ["task"], 50, 3
    write = (not a.quick) if a.write is None else a.write
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    dest = a.json or a.work / "results.json"
    r: dict = {"argv": sys.argv[1:] if argv is None else list(argv), "machine": machine_info(PACKAGES),
               "settings": {"rows": a.rows, "crashers": a.crashers, "stages": a.stages}, "runs": [],
               "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    for kind in a.stages:
        for k in a.crashers:
            x = run_once(kind, a.rows, k, a.work)
            r["runs"].append(x)
            summarise(r)
            print(run_line(x), flush=True)
            if x["accounting_problem"]:
                print(f"  ACCOUNTING: {x['accounting_problem']}", flush=True)
    r["markers"] = marker_cost(a.work, a.rows, a.marker_calls, a.marker_blocks)
    summarise(r)
    print(markers_line(r["markers"]), flush=True)
    r["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(r, indent=1) + "\n")
    print(f"results: {dest}")
    problems = [f"{x['stage']} k={x['crashers']}: {x['accounting_problem']}" for x in r["runs"] if x["accounting_problem"]]
    if problems:
        raise SystemExit("rows not accounted for: " + "; ".join(problems))
    if write:
        if dest.resolve() != RESULTS_JSON.resolve():
            RESULTS_JSON.parent.mkdir(exist_ok=True)
            shutil.copyfile(dest, RESULTS_JSON)
        print(f"wrote {record(r, str(RESULTS_JSON.relative_to(REPO)))} and {RESULTS_JSON.relative_to(REPO)}")
    return r


if __name__ == "__main__":
    main()
