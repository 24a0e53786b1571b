"""Interleaved documents: documents/s end to end, and images/s against the image-text download of the
same images, in one run (same machine, same loopback server, same Ray session, same download settings).

    python bench/interleaved.py --docs 300          # writes the `interleaved` section of bench/RESULTS.md

The document run is the shipped pipelines/interleaved.yaml (parse pages fetched over loopback, filters,
MinHash job, per-image download, image dedup job, CLIP placement with a random-init curate-tiny on CPU,
filters, shards). The image-text run is pipelines/download_only.yaml over a URL list of exactly the images
the document run fetched. The ratio says what the document machinery (nested rows, two jobs, placement)
costs per image relative to plain image-text download.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuMeter, QUIET_ENV, update_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    a = ap.parse_args()
    os.environ.update(QUIET_ENV)
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from curate.demo.interleaved import DEMO_OVERRIDES, generate_documents, truth_table, write_page_list
    from curate.demo.server import DemoServer
    from curate.recipe import load_recipe
    from curate.runner import Runner

    work = Path(tempfile.mkdtemp(prefix="interleaved-", dir=ROOT / "bench" / "out" if (ROOT / "bench" / "out").exists() else None))
    corpus = generate_documents(work / "corpus", a.docs, seed=0)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    results = {}
    with DemoServer(corpus) as server:
        pages = write_page_list(corpus, server.url, work / "pages.parquet")
        dl = ("doc_download.image_size=64", "doc_download.resize_mode=center_crop", "doc_download.threads=32")
        rec = load_recipe("interleaved", (*DEMO_OVERRIDES, *dl), input_path=str(pages), output_path=str(work / "docs"))
        with CpuMeter() as cpu:
            t0 = time.time()
            manifest = Runner(rec).start()
            doc_s = time.time() - t0
        meta = pq.ParquetDataset(str(work / "docs" / "meta")).read(columns=["doc_images"]).to_pylist()
        # the images the document run requested: downloaded (sha256 set; kept or later dropped by dedup or
        # filters) or failed while downloading; not refused, capped, or in documents dropped before download
        urls = [r["url"] for row in meta for r in row["doc_images"] or ()
                if r["url"].startswith("http") and (r["sha256"] is not None or (r["status"] == "failed" and (
                    r["reason"].startswith("download_") or r["reason"] in ("image_decode_error", "image_truncated"))))]
        pq.write_table(pa.table({"url": urls, "caption": ["x"] * len(urls)}), work / "images.parquet")
        rec2 = load_recipe("download_only", ("download.image_size=64", "download.resize_mode=center_crop",
                                             "download.threads=32", "download.timeout_s=10"),
                           input_path=str(work / "images.parquet"), output_path=str(work / "images"))
        with CpuMeter() as cpu2:
            t0 = time.time()
            Runner(rec2).start()
            img_s = time.time() - t0
    rows, metrics = truth_table(work / "docs", corpus)
    results = {
        "docs": a.docs, "images_requested": len(urls), "doc_run_s": round(doc_s, 2),
        "docs_per_s": round(a.docs / doc_s, 1), "doc_images_per_s": round(len(urls) / doc_s, 1),
        "image_text_run_s": round(img_s, 2), "image_text_images_per_s": round(len(urls) / img_s, 1),
        "ratio_images_per_s": round((len(urls) / doc_s) / (len(urls) / img_s), 2),
        "kept_docs": manifest["counts"]["kept"], "ground_truth_kinds_all_as_expected": all(r["as_expected"] == r["rows"] for r in rows),
        "load_avg": [round(cpu.load0[0], 2), round(cpu.load1[0], 2)], "cpu_busy_s": round(cpu.busy_s, 1),
        "timings": manifest["timings"],
    }
    print(json.dumps(results, indent=1))
    if a.no_results:
        return
    body = f"""Command: `python bench/interleaved.py --docs {a.docs}` (one process: one Ray session, one loopback server).

| measure | documents (pipelines/interleaved.yaml) | image-text (download_only.yaml, same image URLs) |
|---|---|---|
| wall time | {results['doc_run_s']} s for {a.docs} documents | {results['image_text_run_s']} s |
| throughput | **{results['docs_per_s']} documents/s**, {results['doc_images_per_s']} images/s | {results['image_text_images_per_s']} images/s |

Images requested by the document run: {len(urls)} (the {a.docs}-document demo corpus incl. its page of
1,200 image references capped at 50). **Ratio of images/s, documents vs image-text: {results['ratio_images_per_s']}**.
The document run also parses pages, runs two jobs (MinHash over document text, image dedup) and CLIP
placement with curate-tiny on CPU; the segment timings were {json.dumps(results['timings'])}. Load average
at start/end of the document run: {results['load_avg']} (machine shared with other jobs).
"""
    update_results("interleaved", body, ["curate", "ray", "img2dataset", "selectolax", "warcio", "open_clip_torch"])


if __name__ == "__main__":
    main()
