"""Near-dup dedup against its peers, same corpus, same run: curate `minhash_dedup` (`curate run` with default
settings: in one process up to `ray.in_process_max_rows` rows, else on local Ray), rensa (Rust MinHash + LSH, one process, a library call) and datatrove (its 4-step MinHash pipeline,
LocalPipelineExecutor with 2 workers). All three use word 3-grams and the same banding (curate's default,
15 bands x 7 rows at threshold 0.8). Prints wall, CPU and peak RSS of each whole process tree, the ratios to
curate, and recall per exact-Jaccard bucket (brute force) on the independent recall corpus of
tests/dedup/_recall_corpus.py (5-200 words; substitutions, insertions, deletions, moved spans).

Usage: python bench/dedup_peers.py [--sizes 200000] [--recall 10000] [--repeat 5] [--json out.json]
       [--in-process-max-rows N]
Needs the bench extra: pip install -e ".[bench]" (rensa; datatrove < 0.9 keeps huggingface-hub < 1; spacy is
datatrove's English word tokenizer).

Each tool runs in its own subprocess (`--child TOOL SRC OUT`); the parent samples the RSS and CPU time of the
child's process tree every 0.2 s (Ray's GCS, raylet and workers included for curate; datatrove's worker
processes included). The child writes `labels.json` (row -> cluster root) for the recall measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

THRESHOLD, BANDS, ROWS, NGRAM = 0.8, 15, 7, 3
TOOLS = ("curate", "rensa", "datatrove")


# -- children: one tool each, read SRC (parquet: id, text), write OUT/labels.json ---------------------------

def _texts(src: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(src, columns=["text"]).column("text").to_pylist()


def _union_find(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(n)]


def child_rensa(src: str, out: Path) -> dict:
    """rensa as a user would call it: MinHash per text over curate's own normalised word 3-grams, LSH with the
    same banding, candidates verified on rensa's estimated Jaccard (what its own deduplicator does)."""
    import rensa

    from curate.dedup.minhash import normalise_text, shingles

    texts = _texts(src)
    lsh = rensa.RMinHashLSH(threshold=THRESHOLD, num_perm=BANDS * ROWS, num_bands=BANDS)
    mh = []
    for i, t in enumerate(texts):
        m = rensa.RMinHash(num_perm=BANDS * ROWS, seed=42)
        m.update([s.decode() for s in shingles(normalise_text(t), "word", NGRAM)])
        lsh.insert(i, m)
        mh.append(m)
    pairs = ((i, j) for i, m in enumerate(mh) for j in lsh.query(m) if j > i and m.jaccard(mh[j]) >= THRESHOLD)
    labels = _union_find(len(texts), pairs)
    return {"rows": len(texts), "dropped": len(texts) - len(set(labels)), "labels": labels}


def child_datatrove(src: str, out: Path) -> dict:
    """datatrove's documented MinHash example: signatures, buckets, cluster, filter (2 tasks, 2 workers)."""
    import pyarrow.parquet as pq
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    # sha1: datatrove 0.8's xxhash path passes str, which the xxhash 3.x installed with `datasets` refuses
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS,
                        hash_config=HashConfig(precision=64, hash_fc="sha1"),
                        # its default folds every digit to 0, which would make the corpora's words ("w123") one word
                        norm_config=TextNormConfig(norm_numbers=False))
    inp = out / "in"
    inp.mkdir()
    t = pq.read_table(src)
    half = t.num_rows // 2  # two input files, so both tasks have work
    pq.write_table(t.slice(0, half), inp / "a.parquet")
    pq.write_table(t.slice(half), inp / "b.parquet")
    w = str(out / "work")
    reader = lambda: ParquetReader(str(inp), id_key="id", text_key="text")  # noqa: E731
    quiet = dict(logging_dir=str(out / "logs"), skip_completed=False)
    LocalPipelineExecutor([reader(), MinhashDedupSignature(f"{w}/sigs", config=cfg)], tasks=2, workers=2, **quiet).run()
    LocalPipelineExecutor([MinhashDedupBuckets(f"{w}/sigs", f"{w}/buckets", config=cfg)], tasks=BANDS, workers=2,
                          **{**quiet, "logging_dir": str(out / "logs2")}).run()
    LocalPipelineExecutor([MinhashDedupCluster(f"{w}/buckets", f"{w}/remove", config=cfg, save_cluster_id=True)],
                          tasks=1, **{**quiet, "logging_dir": str(out / "logs3")}).run()
    LocalPipelineExecutor([reader(), MinhashDedupFilter(f"{w}/remove", exclusion_writer=JsonlWriter(f"{w}/removed"),
                                                        load_cluster_ids=True),
                           JsonlWriter(f"{w}/kept")], tasks=2, workers=2,
                          **{**quiet, "logging_dir": str(out / "logs4")}).run()
    return {"rows": t.num_rows, **_datatrove_labels(Path(w), t.num_rows)}


def _datatrove_labels(w: Path, n: int) -> dict:
    """Row -> cluster root from the kept and removed documents' `minhash_cluster_id` metadata."""
    import gzip

    cluster: dict[int, int] = {}
    dropped = 0
    for folder in ("kept", "removed"):
        for f in sorted((w / folder).glob("*.jsonl.gz")):
            with gzip.open(f, "rt") as fh:
                for line in fh:
                    doc = json.loads(line)
                    cid = doc.get("metadata", {}).get("minhash_cluster_id", -1)
                    cluster[int(doc["id"])] = cid
                    dropped += folder == "removed"
    root: dict[int, int] = {}
    labels = []
    for i in range(n):
        cid = cluster.get(i, -1)
        labels.append(i if cid in (-1, None) else root.setdefault(cid, i))
    return {"dropped": dropped, "labels": labels}


def child_curate(src: str, out: Path) -> dict:
    """The `minhash_dedup` recipe as a user runs it: `curate run recipe.yaml` (the console entry point, in
    this process), default settings (RAY_ADDRESS unset: in process up to ray.in_process_max_rows rows, else
    a local Ray with 2 CPUs)."""
    import pyarrow.parquet as pq
    import yaml

    from curate.cli import main

    t = pq.read_table(src)
    src2 = out / "captions.parquet"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(t.rename_columns(["url" if c == "id" else "caption" if c == "text" else c for c in t.column_names]),
                   src2)
    ray = {"num_cpus": 2}
    if os.environ.get("BENCH_IN_PROCESS_MAX_ROWS"):  # --in-process-max-rows: a user's `ray.in_process_max_rows`
        ray["in_process_max_rows"] = int(os.environ["BENCH_IN_PROCESS_MAX_ROWS"])
    recipe = out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "bench-dedup-peers", "input": {"path": str(src2)},
                                      "output": {"path": str(out / "run"), "samples_per_shard": 50000},
                                      "ray": ray, "stages": [{"minhash_dedup": {"threshold": THRESHOLD}}]}))
    sys.argv = ["curate", "run", str(recipe)]
    try:
        main()
    except SystemExit as e:
        if e.code:
            raise
    return _curate_labels(out / "run")


def _curate_labels(run: Path) -> dict:
    """Row -> the first row of its minhash cluster (itself when in none), from the run's meta; vectorised so
    that reading 1M rows back does not count as curate's time."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    m = pq.read_table(str(run / "meta"), columns=["url", "status", "minhash_cluster"])
    row = pc.cast(m.column("url"), "int64").to_numpy()
    labels = np.empty(len(row), np.int64)
    labels[row] = row
    clustered = pc.is_valid(m.column("minhash_cluster")).to_numpy(zero_copy_only=False)
    if clustered.any():
        codes = pc.dictionary_encode(m.column("minhash_cluster").filter(clustered)).combine_chunks().indices
        codes, rows = codes.to_numpy(), row[clustered]
        first = np.full(codes.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, codes, rows)
        labels[rows] = first[codes]
    dropped = int(pc.sum(pc.equal(m.column("status"), "dropped")).as_py() or 0)
    return {"dropped": dropped, "labels": labels.tolist()}


def child(tool: str, src: str, out: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    res = {"curate": child_curate, "rensa": child_rensa, "datatrove": child_datatrove}[tool](src, Path(out))
    labels = res.pop("labels")
    Path(out, "labels.json").write_text(json.dumps(labels))
    print(json.dumps({**res, "seconds_in_child": round(time.time() - t0, 2)}))


# -- parent: measure each child ------------------------------------------------------------------------------

def measured(tool: str, src: Path, work: Path) -> dict:
    """Run one tool's child; wall, CPU and peak RSS summed over its process tree."""
    import psutil

    out = work / tool
    shutil.rmtree(out, ignore_errors=True)  # a repeated run starts from nothing, as the first
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    load = round(os.getloadavg()[0], 1)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, __file__, "--child", tool, str(src), str(out)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p, peak, cpu = psutil.Process(proc.pid), 0, {}
    while proc.poll() is None:
        try:
            procs = [p] + p.children(recursive=True)
        except psutil.Error:
            procs = []
        rss = 0
        for q in procs:
            try:
                t = q.cpu_times()
                cpu[q.pid] = t.user + t.system  # each process's own time: a parent's children_* would count
                # its exited workers twice (they were sampled while alive); one that lives < 0.2 s is missed
                rss += q.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, rss)
        time.sleep(0.2)
    wall = time.time() - t0
    lines = [x for x in proc.stdout.read().splitlines() if x.startswith("{")]
    res = json.loads(lines[-1]) if lines else {"error": f"exit {proc.returncode}"}
    return {"tool": tool, "wall_s": round(wall, 1), "cpu_s": round(sum(cpu.values()), 1),
            "peak_rss_mb": round(peak / 2**20), "load_before": load, **res}


def corpus(path: Path, texts: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}), path)
    return path


def recall_of(texts: list[str], labels: list[int]) -> list[dict]:
    """Recall per exact-Jaccard bucket: of the pairs in the bucket (brute force), how many share a cluster."""
    import numpy as np
    from dedup._recall_corpus import TEXT_BUCKETS, bucket_recall, text_jaccard_pairs

    i, j, jac = text_jaccard_pairs(texts, 0.5, "word", NGRAM)
    lab = np.asarray(labels)
    return bucket_recall(jac, lab[i] == lab[j], TEXT_BUCKETS)


def median_of(runs: list[dict]) -> dict:
    """One tool's repeated runs as one row: median wall and CPU, the largest peak RSS, every wall kept."""
    import statistics

    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    row = dict(ok[len(ok) // 2])
    row.update(wall_s=round(statistics.median(r["wall_s"] for r in ok), 2),
               cpu_s=round(statistics.median(r["cpu_s"] for r in ok), 2),
               peak_rss_mb=max(r["peak_rss_mb"] for r in ok), walls=[r["wall_s"] for r in runs])
    return row


def run(sizes: list[int], recall_n: int, work: Path, tools=TOOLS, repeat: int = 1) -> dict:
    from bench.dedup import captions

    out: dict = {"machine": f"{os.cpu_count()} CPUs", "banding": [BANDS, ROWS], "threshold": THRESHOLD,
                 "repeat": repeat, "speed": {}, "recall": {}}
    for n in sizes:
        src = corpus(work / f"speed-{n}.parquet", captions(n))
        runs: dict = {tool: [] for tool in tools}
        for _ in range(repeat):  # interleaved, so a slow spell of the machine hits every tool alike
            for tool in tools:
                runs[tool].append(measured(tool, src, work / f"speed-{n}"))
        rows = [median_of(runs[tool]) for tool in tools]
        base = next((r for r in rows if r["tool"] == "curate" and "error" not in r), None)
        for r in rows:
            if base and "error" not in r:
                r["wall_vs_curate"] = round(r["wall_s"] / base["wall_s"], 3)
                r["rss_vs_curate"] = round(r["peak_rss_mb"] / max(base["peak_rss_mb"], 1), 3)
        out["speed"][str(n)] = rows
    if recall_n:
        from dedup._recall_corpus import text_corpus

        texts = text_corpus(recall_n, seed=7)
        src = corpus(work / "recall.parquet", texts)
        for tool in tools:
            r = measured(tool, src, work / "recall")
            if "error" in r:
                out["recall"][tool] = r
                continue
            labels = json.loads((work / "recall" / tool / "labels.json").read_text())
            out["recall"][tool] = {"texts": len(texts), "dropped": r["dropped"], "buckets": recall_of(texts, labels)}
    return out


def table(res: dict) -> str:
    lines = []
    for n, rows in res["speed"].items():
        reps = res.get("repeat", 1)
        lines += [f"\n{n} captions" + (f" (median of {reps} interleaved runs; peak RSS: the largest)" if reps > 1 else ""),
                  "| tool | wall s | CPU s | peak RSS MB | wall / curate | RSS / curate | dropped |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['tool']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} | "
                         f"{r.get('wall_vs_curate', '-')} | {r.get('rss_vs_curate', '-')} | {r.get('dropped', r.get('error'))} |")
    if res["recall"]:
        tools = list(res["recall"])
        first = next(v for v in res["recall"].values() if "buckets" in v)
        lines += ["\nrecall per exact-Jaccard bucket (pairs in one cluster / pairs)",
                  "| Jaccard | pairs | " + " | ".join(tools) + " |", "|---|---|" + "---|" * len(tools)]
        for k, b in enumerate(first["buckets"]):
            cells = [str(res["recall"][t]["buckets"][k]["recall"]) if "buckets" in res["recall"][t] else "-"
                     for t in tools]
            lines.append(f"| {b['bucket']} | {b['pairs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[200_000])
    ap.add_argument("--recall", type=int, default=10_000, help="texts in the recall corpus (0: skip)")
    ap.add_argument("--tools", nargs="*", default=list(TOOLS))
    ap.add_argument("--repeat", type=int, default=1, help="runs of each tool per size, interleaved; the table "
                    "shows the median wall and CPU (this 2-core VM varies by 10-20%% from run to run)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--in-process-max-rows", type=int, default=None,
                    help="curate's ray.in_process_max_rows (default: the recipe default, 2,000,000): raise it to "
                         "keep 10M captions in one process")
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.in_process_max_rows is not None:
        os.environ["BENCH_IN_PROCESS_MAX_ROWS"] = str(a.in_process_max_rows)
    if a.child:
        child(*a.child)
        return
    with tempfile.TemporaryDirectory(prefix="dedup-peers-") as tmp:
        res = run(a.sizes, a.recall, Path(tmp), tuple(a.tools), a.repeat)
    res["load_avg_after"] = [round(x, 1) for x in os.getloadavg()]
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    print(table(res))


if __name__ == "__main__":
    main()
