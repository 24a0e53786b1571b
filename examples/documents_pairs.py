"""Document proof: image-text pairs from curated interleaved documents vs pairs from the raw documents.

The claim to test (issue 18 item 5): the interleaved pipeline's document filters, dedup and mmc4 placement
give better image-text training pairs than the raw pages do. Steps:

1. The interleaved demo corpus (curate/demo/interleaved.py): HTML pages whose paragraphs hold one truthful
   caption sentence per image among filler sentences, with planted faults (duplicate documents, an image
   shared by two documents, images unrelated to every sentence, tiny images, a page with 1,200 images, ...)
   and ground truth. Beside it, a labelled eval split (zero-shot classes, retrieval) and a clean seed split
   drawn from their own random streams (curate/demo/splits.py), so no eval image is a document image.
2. The placement CLIP: curate-tiny-32 trained on the seed split (the demo filter's settings), standing in
   for the pretrained CLIP mmc4 used; nothing is downloaded.
3. Two `curate run`s over the same pages, served on 127.0.0.1: `interleaved` (curated: filters, dedup,
   doc_clip placement with the placement CLIP) and a raw recipe (parse + download only).
4. Pairs (curate/interleaved/pairs.py): **curated** = each placed image with its assigned sentence;
   **raw** = each image of the raw documents with its nearest text in page order; with --page-order-arm
   also **curated_page_order** = the curated documents' images with their nearest text (separates
   placement from filtering; in the committed run).
5. `curate experiment` (in process): the arms above plus **random** = a random subset of raw with
   curated's size (drawn per seed), trained at equal samples seen, seeds paired, verdicts from a t
   interval over seeds and a bootstrap interval over eval examples. Settings are fixed before the runs
   (lr 2e-3 as in the image-text examples; the committed run used batch 32 and 4,800 samples seen, about
   4 passes over the curated pairs), none chosen on the eval split.
6. Beside it: placement accuracy against the ground truth, and per arm the share of pairs whose text holds
   the image's true sentence.

    nice -n 15 python examples/documents_pairs.py --out examples/out/documents_pairs --page-order-arm \\
        --samples-seen 4800 --batch-size 32                 # the committed run (examples/results/)
    python examples/documents_pairs.py --out /tmp/dp --docs 40 --placement-samples-seen 64 \\
        --samples-seen 64 --seeds 1 --eval-n 64      # the plumbing only (what the test runs)

Writes OUT/documents.json (placement accuracy, pair truth, counts; all that `--truth-only` runs) and
OUT/experiment/results.json (the same under `documents`) and report.md; committed copies are in
examples/results/documents_pairs/.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RAW_RECIPE = """\
name: interleaved_raw
description: the raw documents (parse and download only; no filters, dedup or placement)
modality: interleaved
input: {url_col: url, text_col: null}
output: {samples_per_shard: 1000}
stages:
  - parse_documents: {layout: auto, max_images: 50, max_html_bytes: 5000000, timeout_s: 10, retries: 1}
  - doc_download:    {image_size: 256, resize_mode: keep_ratio, timeout_s: 10, retries: 1, on_all_failed: keep}
"""
EVAL_STREAM, SEED_STREAM = 101, 202  # curate.demo.splits' streams: the documents use the generator's own


def prepare_corpus(root: Path, a) -> Path:
    """Documents, the eval split (+ classes.json) and the seed split, generated once (deterministic)."""
    from curate.demo import splits
    from curate.demo.interleaved import generate_documents

    if not (root / "docs" / "documents.json").is_file():
        generate_documents(root / "docs", a.docs, a.corpus_seed)
    if not a.eval_set and not (root / "eval" / "classes.json").is_file():
        splits.write_split(root / "eval", a.eval_n, a.corpus_seed, EVAL_STREAM, balanced=True)
        splits.write_classes(root / "eval" / "classes.json")
    if not a.placement_clip and not any((root / "seed").glob("*.tar")):
        splits.write_split(root / "seed", a.seed_n, a.corpus_seed, SEED_STREAM, balanced=False)
    return root


def placement_clip(root: Path, a) -> Path:
    """--placement-clip as given, else curate-tiny-32 trained on the seed split with the demo filter's
    settings (cached by its settings)."""
    from curate.demo.filter import ensure_filter

    if a.placement_clip:
        return Path(a.placement_clip)
    return ensure_filter(root, threads=a.threads, samples_seen=a.placement_samples_seen)


def curate_runs(root: Path, out: Path, ckpt: Path, a) -> dict[str, Path]:
    """`curate run` interleaved (curated) and the raw recipe over the same pages on loopback."""
    from _ray_local import complete, shared_ray

    runs = {"curated": out / "curated_run", "raw": out / "raw_run"}
    raw_recipe = out / "interleaved_raw.yaml"
    raw_recipe.write_text(RAW_RECIPE)
    todo = {k: v for k, v in runs.items() if not complete(v)}
    if not todo:
        return runs
    with shared_ray(a.ray_address) as address:
        _run_recipes(root, todo, raw_recipe, ckpt, address)
    return runs


def _run_recipes(root: Path, todo: dict[str, Path], raw_recipe: Path, ckpt: Path, ray_address: str | None) -> None:
    from curate.demo.interleaved import DEMO_OVERRIDES, write_page_list
    from curate.demo.server import DemoServer
    from curate.recipe import load_recipe
    from curate.runner import Runner

    with DemoServer(root / "docs") as server, tempfile.TemporaryDirectory() as tmp:
        pages = write_page_list(root / "docs", server.url, Path(tmp) / "pages.parquet")
        for name, run in todo.items():
            if name == "curated":
                rec = load_recipe("interleaved", (*DEMO_OVERRIDES, f"doc_clip.checkpoint={ckpt}", "doc_clip.model=null"),
                                  input_path=str(pages), output_path=str(run))
            else:
                rec = load_recipe(str(raw_recipe), (), input_path=str(pages), output_path=str(run))
            Runner(rec, ray_address=ray_address).start()


def pair_truth(pairs_dir: Path, docs_json: Path) -> dict:
    """Share of pairs whose text holds the image's true caption sentence (documents.json ground truth).

    Only images with a true sentence count in `with_truth` (an unrelated image or a page's 1,200 copies
    have none: their pairs are wrong by construction and are counted as `no_true_sentence`).
    """
    import tarfile

    docs = {d["id"]: d for d in json.loads(docs_json.read_text())}
    out = {"pairs": 0, "with_truth": 0, "holds_true_sentence": 0, "no_true_sentence": 0}
    for tar_path in sorted(pairs_dir.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name, data in files.items():
            if not name.endswith(".json"):
                continue
            meta = json.loads(data)
            text = files[name[:-5] + ".txt"].decode()
            truth = docs[meta["doc_id"]]["images"]
            out["pairs"] += 1
            sentence = truth[meta["image"]]["sentence"] if meta["image"] < len(truth) else None
            if sentence is None:
                out["no_true_sentence"] += 1
                continue
            out["with_truth"] += 1
            out["holds_true_sentence"] += int(sentence in text)
    out["share_true"] = round(out["holds_true_sentence"] / out["pairs"], 4) if out["pairs"] else None
    return out


def eval_dir(root: Path, a) -> str:
    return a.eval_set or str(root / "eval")


def experiment(out: Path, root: Path, pairs: dict[str, Path], a) -> dict:
    """The arms at equal samples seen, random subset of raw as the control, seeds paired."""
    from curate.train.experiment import Arm, ExperimentSpec, run_experiment
    from curate.train.loop import TrainConfig

    arms = {"curated": Arm("curated", [str(pairs["curated"])]), "raw": Arm("raw", [str(pairs["raw"])]),
            "random": Arm("random", random_subset_of="raw", size_of="curated")}
    compare = [("curated", "raw"), ("curated", "random")]
    if a.page_order_arm:
        arms["curated_page_order"] = Arm("curated_page_order", [str(pairs["curated_page_order"])])
        compare.append(("curated", "curated_page_order"))
    spec = ExperimentSpec(arms=arms, eval_set=eval_dir(root, a), seeds=a.seeds, primary_metrics=list(a.primary),
                          compare=compare)
    base = TrainConfig(shards=[], output="", model=a.model, samples_seen=a.samples_seen, batch_size=a.batch_size,
                       lr=a.lr, warmup=a.warmup, workers=0, threads=a.threads, log_every=20, device="cpu")
    return run_experiment(spec, str(out / "experiment"), base)


def documents_md(doc: dict) -> str:
    """The report's section on placement and the pairs themselves (ground truth, not training)."""
    p = doc["placement"]
    rows = "\n".join(f"| {n} | {t['pairs']} | {t['with_truth']} | {t['holds_true_sentence']} | {t['share_true']} |"
                     for n, t in doc["pair_truth"].items())
    return (f"\n## Placement and pair truth (ground truth of the synthetic documents)\n\n"
            f"Placement CLIP: {doc['placement_clip']['model']} ({doc['placement_clip']['checkpoint']}, "
            f"{doc['placement_clip']['samples_seen'] or 'given'} samples seen on a clean seed split); its own eval zero-shot top-1 {doc['placement_clip']['eval']['zeroshot_top1']:.3f}, "
            f"image-to-text R@1 {doc['placement_clip']['eval']['image_to_text_R@1']:.3f}.\n\n"
            f"Placement accuracy (curated run): **{p['placement_accuracy']:.3f}** over {p['placed']} placed images "
            f"with a true sentence (chance {p['placement_chance']:.3f}).\n\n"
            "| arm | pairs | with a true sentence | text holds it | share of all pairs |\n|---|---|---|---|---|\n"
            f"{rows}\n")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/out/documents_pairs")
    ap.add_argument("--docs", type=int, default=500, help="documents in the corpus")
    ap.add_argument("--corpus-seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=400, help="eval split size (balanced over 64 classes)")
    ap.add_argument("--seed-n", type=int, default=1500, help="seed split size (the placement CLIP's training data)")
    ap.add_argument("--placement-samples-seen", type=int, default=16000)
    ap.add_argument("--placement-clip", default=None,
                    help="a trained CLIP checkpoint for doc_clip (e.g. `curate demo`'s filter_clip.pt) instead of "
                         "training one on the seed split")
    ap.add_argument("--eval-set", default=None, help="a labelled eval split (default: one generated beside the corpus)")
    ap.add_argument("--model", default="curate-tiny-32")
    ap.add_argument("--samples-seen", type=int, default=1600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--page-order-arm", action=argparse.BooleanOptionalAction, default=False,
                    help="also train curated_page_order (placement off, filters on: separates placement from "
                         "filtering); a quarter more compute")
    ap.add_argument("--truth-only", action="store_true",
                    help="stop after the runs, pairs and ground-truth measures (OUT/documents.json); no training")
    ap.add_argument("--ray-address", default=None, help="a running Ray (default: start a local one)")
    ap.add_argument("--primary", nargs="+", default=["zeroshot_top1", "image_to_text_R@1"])
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)  # evaluations outside `curate train` too: extra threads only spin on a busy box
    out = Path(a.out)
    root = prepare_corpus(out / "corpus", a)
    seconds, t0 = {}, time.monotonic()

    def lap(name: str) -> None:
        nonlocal t0
        seconds[name], t0 = round(time.monotonic() - t0, 1), time.monotonic()

    ckpt = placement_clip(root, a)
    lap("placement_clip")
    runs = curate_runs(root, out, ckpt, a)
    lap("curate_runs")
    from curate.demo.interleaved import truth_table
    from curate.interleaved.pairs import write_pairs
    from curate.train.evaluate import evaluate

    pairs = {"curated": out / "pairs" / "curated", "raw": out / "pairs" / "raw",
             "curated_page_order": out / "pairs" / "curated_page_order"}
    counts = {"curated": write_pairs(runs["curated"], pairs["curated"], "placement"),
              "raw": write_pairs(runs["raw"], pairs["raw"], "page_order"),
              "curated_page_order": write_pairs(runs["curated"], pairs["curated_page_order"], "page_order")}
    _, placement = truth_table(runs["curated"], root / "docs")
    truth = {n: pair_truth(p, root / "docs" / "documents.json") for n, p in pairs.items()}
    ev = evaluate(str(ckpt), eval_dir(root, a), device="cpu")
    lap("pairs_and_truth")
    documents = {
        "docs": a.docs, "corpus_seed": a.corpus_seed, "pairs": counts, "pair_truth": truth, "placement": placement,
        "placement_clip": {"checkpoint": str(ckpt), "model": "curate-tiny-32",
                           "samples_seen": None if a.placement_clip else a.placement_samples_seen,
                           "eval": {k: ev.get(k) for k in ("zeroshot_top1", "image_to_text_R@1", "text_to_image_R@1")}},
        "seconds": seconds, "load_average": [round(x, 1) for x in os.getloadavg()]}
    (out / "documents.json").write_text(json.dumps(documents, indent=1))
    if a.truth_only:
        print(json.dumps({k: documents[k] for k in ("pairs", "pair_truth", "placement")}, indent=1))
        return {"documents": documents}
    results = experiment(out, root, pairs, a)
    lap("experiment")
    results["documents"] = {**documents, "seconds": seconds, "load_average": [round(x, 1) for x in os.getloadavg()]}
    exp = out / "experiment"
    (exp / "results.json").write_text(json.dumps(results, indent=1))
    with open(exp / "report.md", "a") as f:
        f.write(documents_md(results["documents"]))
    print(json.dumps({k: results["documents"][k] for k in ("pair_truth", "placement", "seconds")}, indent=1))
    return results


if __name__ == "__main__":
    main()
