"""`curate demo --modality video`: generate the video corpus, serve it on loopback, run
pipelines/video_text.yaml, print the funnel and the ground truth per video and per clip."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from curate.demo.run import cache_root, mark_demo_run, prepare_run_dir

DEMO_VIDEOS = 8
# the recipe's defaults, plus what the demo's input list has: WebVTT sidecars in a `subtitles` column
DEMO_OVERRIDES = ["download_video.subtitles_col=subtitles", "download_video.timeout_s=5"]


def ensure_video_corpus(seed: int, log) -> Path:
    from curate.demo.video import generate

    root = cache_root() / "demo" / f"video-text-v{DEMO_VIDEOS}-s{seed}"
    if (root / "corpus.json").exists() and (root / "_COMPLETE").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    log(f"generating {DEMO_VIDEOS} demo videos and planted faults into {root}")
    generate(root, DEMO_VIDEOS, seed=seed)
    (root / "_COMPLETE").write_text("ok\n")
    return root


def run_video_demo(out: Path, *, seed: int, ray_address, overrides, out_console, err_console, progress,
                   print_funnel, print_truth_table, truth_html, fail, samples: int | None = None):
    """`samples` (-n) does not size this corpus: each clean video needs motions no other clean video has (the
    near-duplicate ground truth; 24 exist, so 12 clean videos at most), and each planted fault is one video.
    A given -n is answered with one line saying what the demo makes instead of being ignored in silence."""
    from curate.demo.server import DemoServer
    from curate.demo.video import corpus_rows, truth_table, write_url_list
    from curate.recipe import load_recipe
    from curate.runner import Runner

    from curate.video._extra import require_video_extra

    total = corpus_rows(DEMO_VIDEOS)
    made = f"{total} videos ({DEMO_VIDEOS} clean, {total - DEMO_VIDEOS} with one planted fault each)"
    if samples is not None and samples != total:
        err_console.print(f"note: -n {samples} does not apply to the video demo: its corpus is a fixed {made}, "
                          "each with a known outcome per clip", highlight=False, soft_wrap=True)

    try:
        require_video_extra("the video demo")
    except ValueError as err:
        fail(str(err))
    try:
        prepare_run_dir(out)
    except FileExistsError as err:
        fail(str(err))
    corpus = ensure_video_corpus(seed, log=lambda m: err_console.print(m, highlight=False))
    bar, update = progress()
    with DemoServer(corpus) as server, tempfile.TemporaryDirectory() as tmp:
        urls = write_url_list(corpus, server.url, Path(tmp) / "videos.parquet")
        err_console.print(f"serving {made} at {server.url}", highlight=False)
        rec = load_recipe("video_text", [*DEMO_OVERRIDES, *overrides], input_path=str(urls), output_path=str(out))
        runner = Runner(rec, ray_address=ray_address, on_progress=update)
        try:
            with bar:
                manifest = runner.start()
        finally:  # finished or interrupted: the demo wrote it, so the next demo may replace it
            mark_demo_run(out)
    print_funnel(manifest)
    videos, clips = truth_table(out, corpus)
    runner.write_report([("Ground truth (video demo)", truth_html(videos + clips))])
    print_truth_table("ground truth: videos", videos)
    print_truth_table("ground truth: clips", clips)
    out_console.print(f"run directory: {out}   corpus: {corpus}", highlight=False)
    out_console.print(f'next: curate query {out} "SELECT parent_uid, start, \\"end\\", text, motion FROM kept"',
                      highlight=False)
    return manifest


__all__ = ["run_video_demo", "ensure_video_corpus"]
