"""Near-dup dedup benchmark: signature throughput per core against datasketch, end-to-end minhash_dedup with
peak RSS at two corpus sizes. Usage: python bench/dedup.py [--sizes 200000 1000000] [--skip-e2e]

Against the peers (rensa, datatrove; wall, CPU, peak tree RSS, ratios, recall per Jaccard bucket, same corpus,
same run): `python bench/dedup.py --peers [--sizes ...] [--recall N]`, which runs bench/dedup_peers.py (the one
implementation; it can also be run directly).

Throughput runs in this process on one core. End-to-end runs the real Runner (local Ray, 2 CPUs, the Ray
shuffle path) in a subprocess per size and samples the RSS (every 0.5 s) and PSS (every 2 s) summed over
that process tree (driver, Ray GCS/raylet, workers). --two-node N runs the same recipe with `curate run` on a
single-node Ray and on a two-node cluster started with `ray start --head` / `ray start --address`, and checks
the clusters are identical.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def captions(n: int, seed: int = 0, dup_rate: float = 0.1) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(30000)]
    out = []
    for i in range(n):
        if out and rng.random() < dup_rate:
            words = rng.choice(out[-1000:]).split()
            if rng.random() < 0.5:  # a light edit
                words[rng.randrange(len(words))] = rng.choice(vocab)
            out.append(" ".join(words) + rng.choice(["", ".", "!"]))
        else:
            out.append(" ".join(rng.choices(vocab, k=rng.randint(8, 16))))
    return out


def throughput(n: int = 20000, repeats: int = 3) -> dict:
    """Captions per CPU-second of this (single-threaded) process, best of `repeats` interleaved runs: CPU
    time rather than wall time, because the machine is shared and wall time measures the neighbours."""
    from datasketch import MinHash

    from curate.dedup.minhash import normalise_text, shingles, signatures

    texts = captions(n, seed=1)
    sh0 = [shingles(normalise_text(t)) for t in texts]
    m = min(n, 4000)
    best = {"curate": 0.0, "bulk": 0.0, "loop": 0.0}
    sigs = bulk = None
    for _ in range(repeats):
        t0 = time.process_time()
        sh = [shingles(normalise_text(t)) for t in texts]
        sigs = signatures(sh)
        best["curate"] = max(best["curate"], n / (time.process_time() - t0))
        # the peers get ready-made shingles (normalisation and shingling are not timed: favours them)
        t0 = time.process_time()
        bulk = MinHash.bulk(sh0, num_perm=128)
        best["bulk"] = max(best["bulk"], n / (time.process_time() - t0))
        t0 = time.process_time()
        for s in sh0[:m]:
            mh = MinHash(num_perm=128)
            for x in s:
                mh.update(x)
        best["loop"] = max(best["loop"], m / (time.process_time() - t0))
    assert all(np.array_equal(b.hashvalues, sigs[i]) for i, b in enumerate(bulk))
    return {"captions": n, "curate_per_cpu_s": round(best["curate"]), "datasketch_bulk_per_cpu_s": round(best["bulk"]),
            "datasketch_update_loop_per_cpu_s": round(best["loop"]), "vs_bulk": round(best["curate"] / best["bulk"], 2),
            "vs_update_loop": round(best["curate"] / best["loop"], 1)}


def shuffle_bytes(n: int = 20000) -> dict:
    """What minhash_dedup's map side sends through the shuffle, per input row and per column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.dedup.minhash import MinHashDedup

    t = pa.table({"uid": [f"{i:016x}" for i in range(n)], "part": pa.array([0] * n, pa.int32()), "text": captions(n)})

    r = MinHashDedup().prepare(t)
    one_pass = {"records_per_row": r.num_rows / n, "total": round(r.nbytes / n),
                **{c: round(r.column(c).nbytes / n) for c in r.column_names}}
    # the runner's key pre-pass (MinHashDedup.key_prepass): pass 1 ships the keys (+ a 4-byte bucket),
    # pass 2 only the records whose key occurs at least twice
    counts = r.group_by("key").aggregate([("key", "count")])
    shared = counts.filter(pc.greater(counts.column("key_count"), 1)).column("key")
    kept = r.filter(pc.is_in(r.column("key"), value_set=shared.combine_chunks()))
    pass1 = r.num_rows * (8 + 4) / n
    pass2 = kept.nbytes / n
    return {"one_pass": one_pass, "two_pass": {"pass1_keys": round(pass1), "pass2_records": round(pass2, 1),
            "records_per_row_pass2": round(kept.num_rows / n, 3), "total": round(pass1 + pass2),
            "shared_keys": int(len(shared))}, "reduction": round(one_pass["total"] / (pass1 + pass2), 1)}


def accuracy() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from dedup._corpus import planted_corpus, true_pairs

    from curate.dedup.graph import edge_uids
    from curate.dedup.minhash import MinHashDedup
    from curate.stage import reduce_records
    import pyarrow as pa

    res = {}
    for name, edits in (("planted", (0, 1, 3, 5, 20, 35)), ("crowded_at_threshold", (0, 2, 5, 8, 10, 12, 20))):
        texts = planted_corpus(300, seed=5, edits=edits)
        truth = true_pairs(texts, 0.8)
        t = pa.table({"uid": [f"u{i:06d}" for i in range(len(texts))], "part": pa.array([0] * len(texts), pa.int32()),
                      "text": texts})
        job = MinHashDedup()
        e = reduce_records(job, job.prepare(t))
        idx = {u: i for i, u in enumerate(t.column("uid").to_pylist())}
        found = {tuple(sorted((idx[a], idx[b]))) for a, b in edge_uids(e)}
        tp = len(found & truth)
        res[name] = {"true_pairs": len(truth), "found": len(found), "precision": round(tp / max(1, len(found)), 4),
                     "recall": round(tp / max(1, len(truth)), 4)}
    return res


def job_cpu(n: int, repeats: int = 2) -> dict:
    """CPU seconds of minhash_dedup's own work on n captions in this process (map, group + reduce, components:
    what `run_job_local` does, without Ray), best of `repeats`. On a machine too loaded for Ray to start
    this is the comparable number: Ray's fixed costs do not depend on the banding or the verification."""
    import pyarrow as pa

    from curate.dedup.minhash import MinHashDedup
    from curate.stage import prepare_records, reduce_records

    texts = captions(n)
    t = pa.table({"uid": [f"{i:016x}" for i in range(n)], "part": pa.array([i * 8 // n for i in range(n)], pa.int32()),
                  "text": texts, "status": ["ok"] * n})
    job = MinHashDedup()
    job.lsh()  # parameter search outside the timing
    best: dict = {}
    for _ in range(repeats):
        t0 = time.process_time()
        rec = prepare_records(job, t)
        t1 = time.process_time()
        edges = reduce_records(job, rec)
        t2 = time.process_time()
        dec = job.finalize(edges)
        t3 = time.process_time()
        cur = {"prepare_cpu_s": t1 - t0, "reduce_cpu_s": t2 - t1, "components_cpu_s": t3 - t2, "total_cpu_s": t3 - t0}
        if not best or cur["total_cpu_s"] < best["total_cpu_s"]:
            best = cur
    return {"rows": n, "bands_rows": list(job.lsh()), "records": rec.num_rows, "record_bytes": rec.nbytes,
            "edges": edges.num_rows, "dropped": int(sum(s == "dropped" for s in dec.column("status").to_pylist())),
            **{k: round(v, 2) for k, v in best.items()}, "load_avg_1min": round(os.getloadavg()[0], 1)}


def recall(texts_n: int = 10000, images_n: int = 600, vectors_n: int = 6000, seeds=(1,)) -> dict:
    """Recall per similarity bucket against brute force (tests/dedup/_recall_corpus.py) for the three
    near-dup jobs at their defaults, and for minhash_dedup with the old balanced 9 x 13 banding."""
    sys.path.insert(0, str(ROOT / "tests"))
    from dedup._recall_corpus import (embedding_corpus, image_corpus, minhash_recall, phash_recall, semantic_recall,
                                      text_corpus)

    from curate.dedup.minhash import MinHashDedup
    from curate.dedup.phash import PHashDedup
    from curate.dedup.semantic import SemanticDedup

    out: dict = {"minhash": {}, "phash": {}, "semantic": {}}
    for seed in seeds:
        texts = text_corpus(texts_n, seed=seed)
        out["minhash"][f"seed{seed}"] = minhash_recall(texts, MinHashDedup())
        out["minhash"][f"seed{seed}_balanced_9x13"] = minhash_recall(texts, MinHashDedup(bands=9, rows=13))
    out["phash"] = phash_recall(image_corpus(images_n, seed=seeds[0]), PHashDedup())
    out["semantic"] = semantic_recall(embedding_corpus(vectors_n, seed=seeds[0]), SemanticDedup())
    return out


def e2e_child(src: str, out: str, local_max: int = 0, address: str | None = None) -> None:
    from curate.recipe import build_recipe
    from curate.runner import Runner

    recipe = build_recipe({"name": "bench-dedup", "input": {"path": src},
                           "output": {"path": out, "samples_per_shard": 50000},
                           "ray": {"num_cpus": None if address else 2, "job_local_max_rows": local_max,
                                   "in_process_max_rows": 0,  # this measures the Ray path (dedup_peers: the default)
                                   "job_key_prepass": os.environ.get("BENCH_PREPASS", "auto")},
                           "stages": [{"minhash_dedup": {}}]})
    t0 = time.time()
    m = Runner(recipe, ray_address=address).start()
    print(json.dumps({"seconds": round(time.time() - t0, 1), "counts": m["counts"], "timings": m["timings"],
                      "jobs": m.get("jobs")}))


def e2e(n: int, work: Path, prepass: bool = False) -> dict:
    import psutil
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = work / f"captions-{n}.parquet"
    if not src.exists():
        texts = captions(n)
        pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(n)], "caption": texts}), src)
    out = work / f"out-{n}{'-prepass' if prepass else ''}"
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    load_before = round(os.getloadavg()[0], 1)
    if prepass:
        env["BENCH_PREPASS"] = "on"
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(src), str(out)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    peak = peak_pss = 0
    p = psutil.Process(proc.pid)
    last_pss = 0.0
    cpu: dict[int, float] = {}  # pid -> last seen user+system seconds (sampled: a process's last 0.5 s is lost)
    while proc.poll() is None:
        try:
            procs = [p] + p.children(recursive=True)
            for q in procs:
                try:
                    t = q.cpu_times()
                    cpu[q.pid] = t.user + t.system
                except psutil.Error:
                    pass
            rss = sum(q.memory_info().rss for q in procs if q.is_running())
            peak = max(peak, rss)
            if time.time() - last_pss > 2:  # PSS counts shared pages once: the tree's real footprint
                last_pss = time.time()
                peak_pss = max(peak_pss, sum(q.memory_full_info().pss for q in procs if q.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.5)
    line = [x for x in proc.stdout.read().splitlines() if x.startswith("{")]
    res = json.loads(line[-1]) if line else {"error": f"exit {proc.returncode}"}
    res.update(tree_cpu_s=round(sum(cpu.values()), 1), load_avg_1min_before=load_before)
    res.update(rows=n, shuffle="key pre-pass" if prepass else "default (one node: one pass)", peak_rss_mb=round(peak / 2**20), peak_pss_mb=round(peak_pss / 2**20),
               load_avg_5min_after=round(os.getloadavg()[1], 1))
    return res


def _clusters(out: Path) -> dict:
    import pyarrow.parquet as pq

    t = pq.read_table(str(out / "meta"), columns=["uid", "status", "reason", "dup_of", "minhash_cluster"])
    return {r["uid"]: (r["status"], r["reason"], r["dup_of"], r["minhash_cluster"]) for r in t.to_pylist()}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _curate_run(recipe: Path, src: Path, out: Path, env: dict, address: str | None = None) -> None:
    cmd = [sys.executable, "-m", "curate.cli", "run", str(recipe), "--input", str(src), "--output", str(out)]
    subprocess.run(cmd + (["--ray-address", address] if address else []), check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def two_node(n: int, work: Path) -> dict:
    """The same recipe through `curate run`: on a local single-node Ray, and on a two-node cluster made with
    the real commands (`ray start --head` and a second `ray start --address`, 1 CPU each, loopback, separate
    temp dirs), with the job forced onto the distributed path in both. The clusters must be identical.
    Ray >= 2.5x enables token authentication on `ray start`; every process here shares one generated token
    (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN) so nothing reads or writes ~/.ray. Each `ray start --block` runs in
    its own process group and the group is stopped (not `ray stop`, which would stop every Ray on a shared
    machine): SIGTERM alone leaves `ray start` waiting on its defunct raylet."""
    import secrets
    import signal

    import pyarrow as pa
    import pyarrow.parquet as pq

    src = work / f"captions-{n}.parquet"
    if not src.exists():
        pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(n)], "caption": captions(n)}), src)
    # one node: the default Ray path (one pass, components in one worker task); two nodes: every
    # distributed piece (key pre-pass, which `auto` turns on there, and star rounds for the components)
    recipe = work / "recipe.yaml"
    recipe.write_text("name: bench-two-node\ninput: {text_col: caption}\noutput: {samples_per_shard: %d}\n"
                      "ray: {job_local_max_rows: 0}\nstages:\n  - minhash_dedup: {}\n" % max(1, n // 8))
    recipe2 = work / "recipe-two-node.yaml"
    recipe2.write_text(recipe.read_text().replace("{job_local_max_rows: 0}",
                                                  "{job_local_max_rows: 0, job_components_max_edges: 0}"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    t0 = time.time()
    _curate_run(recipe, src, work / "one-node", env)
    one_node_s = time.time() - t0
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command, from this interpreter
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Ray's socket paths live under --temp-dir and AF_UNIX paths are limited to 107 bytes: keep it short
    tmp = Path(tempfile.mkdtemp(prefix="cr2n-", dir="/tmp"))
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
    procs = [subprocess.Popen([*ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                               "--temp-dir", str(tmp / "h"), *common], env=env, start_new_session=True,
                              stdout=open(work / "ray-head.log", "wb"), stderr=subprocess.STDOUT)]
    nodes = 0
    try:
        deadline = time.time() + 90
        while True:  # wait for the head's GCS before the second node joins
            probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}', "
                                    "logging_level='ERROR'); print(len(ray.nodes()))"], env=env,
                                   capture_output=True, text=True, timeout=120)
            if probe.returncode == 0 or time.time() > deadline:
                break
            if procs[0].poll() is not None:
                raise RuntimeError("ray start --head exited: " + (work / "ray-head.log").read_text()[-400:])
            time.sleep(2)
        procs.append(subprocess.Popen([*ray_cli, "start", "--address", address, "--temp-dir",
                                       str(tmp / "n"), *common], env=env, start_new_session=True,
                                      stdout=open(work / "ray-node2.log", "wb"), stderr=subprocess.STDOUT))
        while time.time() < deadline + 60:
            probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}', "
                                    "logging_level='ERROR'); print(sum(x['Alive'] for x in ray.nodes()))"],
                                   env=env, capture_output=True, text=True, timeout=120)
            nodes = int(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 and probe.stdout.strip() else 0
            if nodes >= 2:
                break
            time.sleep(2)
        if nodes < 2:
            raise RuntimeError(f"the second Ray node did not join {address}")
        t0 = time.time()
        _curate_run(recipe2, src, work / "two-node", env, address)
        two_node_s = time.time() - t0
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in reversed(procs):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(5 if sig == signal.SIGTERM else 0)
        for p in procs:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = _clusters(work / "one-node"), _clusters(work / "two-node")
    m = json.loads((work / "two-node" / "manifest.json").read_text())
    m1 = json.loads((work / "one-node" / "manifest.json").read_text())
    dropped = sum(v[1] == "near_duplicate" for v in a.values())
    return {"rows": n, "nodes": nodes, "identical": a == b, "near_duplicates": dropped,
            "job_one_node": m1.get("jobs", {}).get("job0:minhash_dedup"),
            "job_two_node": m.get("jobs", {}).get("job0:minhash_dedup"), "one_node_s": round(one_node_s, 1),
            "two_node_s": round(two_node_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[200_000, 1_000_000])
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--local-max", type=int, default=0)
    ap.add_argument("--address")
    ap.add_argument("--two-node", type=int, default=0, help="rows for the two-node identity check (0: skip)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--recall", type=int, default=0, help="texts per seed for the recall-per-bucket measurement (0: skip)")
    ap.add_argument("--job-cpu", type=int, default=0, help="rows for the in-process job CPU measurement (0: skip)")
    ap.add_argument("--compare-prepass", action="store_true",
                    help="also run each size with the key pre-pass forced on (interleaved), to compare")
    ap.add_argument("--peers", action="store_true",
                    help="run bench/dedup_peers.py instead: curate (default settings), rensa, datatrove, same corpus")
    a, rest = ap.parse_known_args()
    if a.peers:
        from bench import dedup_peers

        sys.argv = [str(ROOT / "bench" / "dedup_peers.py"), "--sizes", *map(str, a.sizes),
                    "--recall", str(a.recall or 10_000), *rest]
        return dedup_peers.main()
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if a.child:
        return e2e_child(*a.child, local_max=a.local_max, address=a.address)
    if a.recall:
        print(json.dumps({"recall": recall(a.recall)}), flush=True)
    if a.job_cpu:
        print(json.dumps({"job_cpu": job_cpu(a.job_cpu)}), flush=True)
    if a.two_node:
        work = Path(tempfile.mkdtemp(prefix="dedup-2node-", dir=ROOT / "bench" / "out"))
        print(json.dumps({"two_node": two_node(a.two_node, work)}), flush=True)
    if not a.skip_throughput:
        print(json.dumps({"throughput_1core": throughput()}), flush=True)
        print(json.dumps({"shuffle_bytes_per_row": shuffle_bytes()}), flush=True)
        print(json.dumps({"accuracy_t0.8": accuracy()}), flush=True)
    if not a.skip_e2e:
        work = Path(tempfile.mkdtemp(prefix="dedup-", dir=ROOT / "bench" / "out"))
        for n in a.sizes:
            print(json.dumps({"e2e": e2e(n, work)}), flush=True)
            if a.compare_prepass:
                print(json.dumps({"e2e": e2e(n, work, prepass=True)}), flush=True)


if __name__ == "__main__":
    main()
