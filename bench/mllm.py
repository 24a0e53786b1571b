"""MLLM scoring benchmark: the mllm_score stage against the model's forward alone on the same batches, and
the endpoint client's request rate against a loopback server that answers without a model.

Usage: python bench/mllm.py [--rows 512] [--batch-size 16] [--model PATH_OR_HUB_ID] [--device auto]

- in process: `MllmScore.process` on a table of JPEG rows (decode, chat template, processor, forward,
  columns) vs `TransformersBackend.forward_batch` timed alone on the same batches, images already
  decoded (processor + forward: the limit for a stage that must feed that model). Ratio = stage / limit.
- endpoint: `MllmScore(backend=endpoint)` rows/s through the loopback chat server (deterministic scorer,
  no model) at max_concurrency 1 and 8, no cache: the client's own ceiling on this machine.
Without --model a tiny random LLaVA is built (curate.scorers.tiny_vlm): the numbers then measure the
plumbing around a model whose forward costs almost nothing, the worst case for the ratio.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def rows_table(n: int):
    import pyarrow as pa

    from curate import schema
    from curate.demo.images import encode, render
    from curate.scorers.mllm import MllmScore

    imgs, texts = [], []
    for i in range(n):
        im, attrs = render(i)
        imgs.append(encode(im.resize((128, 128))))
        texts.append(f"a {attrs.get('colour', 'red')} {attrs.get('shape', 'circle')}")
    t = pa.table({"uid": [f"u{i}" for i in range(n)], "text": texts, "image": imgs, "status": ["ok"] * n})
    return schema.conform(t, schema.run_schema({"image": pa.binary(), **MllmScore.writes}))


def bench_in_process(model: str, rows: int, batch_size: int, device: str) -> dict:
    from PIL import Image

    from curate.scorers.mllm import PROMPTS, MllmScore

    table = rows_table(rows)
    stage = MllmScore(model=model, batch_size=batch_size, device=device)
    stage.setup()
    stage.process(table.slice(0, batch_size))  # warm-up
    t0 = time.perf_counter()
    stage.process(table)
    stage_s = time.perf_counter() - t0

    backend = stage._backend
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in table.column("image").to_pylist()]
    prompts = [PROMPTS["yes_prob"].replace("{caption}", t) for t in table.column("text").to_pylist()]
    t0 = time.perf_counter()
    for s in range(0, rows, batch_size):
        backend.forward_batch(images[s:s + batch_size], prompts[s:s + batch_size])
    model_s = time.perf_counter() - t0
    return {"rows": rows, "batch_size": batch_size, "device": backend.device, "stage_rows_s": rows / stage_s,
            "forward_rows_s": rows / model_s, "ratio": model_s / stage_s}


def bench_endpoint(rows: int, concurrency: int) -> dict:
    from scoring_mllm.chat_server import ChatServer

    from curate.scorers.mllm import MllmScore

    table = rows_table(rows)
    with ChatServer(delay_s=0.0) as server:
        stage = MllmScore(backend="endpoint", model="bench", base_url=server.url, max_concurrency=concurrency,
                          cache=False)
        stage.process(table.slice(0, 8))
        t0 = time.perf_counter()
        out = stage.process(table)
        s = time.perf_counter() - t0
        assert out.column("mllm_score").null_count == 0
    return {"rows": rows, "max_concurrency": concurrency, "rows_s": rows / s}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default=None, help="hub id or folder (default: a tiny random LLaVA built here)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = ap.parse_args(argv)

    from _common import update_results

    from curate.scorers.tiny_vlm import build_tiny_vlm

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_tiny_vlm(Path(tmp) / "tiny"))
        label = args.model or "tiny random LLaVA (curate.scorers.tiny_vlm, 72k params, 32 px)"
        ip = bench_in_process(model, args.rows, args.batch_size, args.device)
    eps = [bench_endpoint(args.rows, c) for c in (1, 8)]
    print(f"in process ({label}, {ip['device']}): stage {ip['stage_rows_s']:.1f} rows/s, forward alone "
          f"{ip['forward_rows_s']:.1f} rows/s, ratio stage/forward {ip['ratio']:.2f}")
    for e in eps:
        print(f"endpoint, loopback server without a model, max_concurrency {e['max_concurrency']}: "
              f"{e['rows_s']:.0f} rows/s")
    if args.no_record:
        return
    cmd = "python bench/mllm.py " + " ".join(argv if argv is not None else sys.argv[1:])
    body = f"""Command: `{cmd.strip()}`

Model: {label}. {args.rows} rows of 128 px demo JPEGs, batch_size {args.batch_size}, yes_prob mode, device {ip['device']}.
*forward alone* = processor + model forward on the same batches with the images already decoded (the limit
for a stage feeding that model); the stage adds JPEG decode, prompt templating and the Arrow columns.

| path | rows/s | ratio vs forward alone |
|---|---|---|
| mllm_score (transformers, in process) | {ip['stage_rows_s']:.1f} | {ip['ratio']:.2f} |
| forward alone | {ip['forward_rows_s']:.1f} | 1.00 |
""" + "".join(f"| mllm_score (endpoint, loopback server without a model, max_concurrency {e['max_concurrency']}) "
              f"| {e['rows_s']:.0f} | - |\n" for e in eps) + """
The endpoint rows measure the client (data URLs, JSON, httpx, retries bookkeeping) against an aiohttp server
that answers at once, both in one Python process on the 2 shared cores, so concurrency cannot help here; with a
real server the bound is the server's throughput. Ran under the CPU lock (no other benchmark or test running).
"""
    update_results("mllm", body, ["curate", "torch", "transformers", "httpx", "aiohttp"])


if __name__ == "__main__":
    main()
