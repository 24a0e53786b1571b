"""clip_score's host side alone at a real model's input size, without the model: CPU per image on the thread
path and in decode processes (worker and scoring-process CPU), which together predict what N cores can feed;
pixels through shared memory and through the pipe, and the resize in PIL and as torch ops (`resize: torch`).

    python bench/host_decode.py --model ViT-B-32     # 224 px input; the numbers in RESULTS.md gpu-host-decode

Why CPU time: on a shared machine wall time measures the neighbours; CPU seconds per image do not depend on
them much, and the workers' cost divides over cores while the scoring process's does not.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--unique", type=int, default=64)
    ap.add_argument("--image-px", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per variant (the best is kept)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from bench import gpu
    from curate.models.clip import load_clip
    from curate.scorers.clip_score import decode_batch, input_size, split_preprocess

    blobs, texts = gpu.corpus(a.n, a.unique, a.image_px)
    clip = load_clip(a.model, device="cpu")  # random init: only its preprocess and tokenizer are used
    split = split_preprocess(clip.preprocess)
    from curate.scorers.tensor_resize import tensor_part

    thread_path = {}
    for resize, part in (("pil", split[0]), ("torch", tensor_part(split[0]))):
        c0 = time.process_time()
        for lo in range(0, a.n, a.batch_size):  # the thread path's work, on this thread
            decode_batch(clip, blobs[lo:lo + a.batch_size], texts[lo:lo + a.batch_size], True, part)
        thread_path[resize] = 1e3 * (time.process_time() - c0) / a.n
    r = {"model": a.model, "input_px": input_size(clip), "jpeg_px": a.image_px, "n": a.n,
         "thread_path_cpu_ms_per_img": thread_path["pil"], "thread_path_torch_resize_cpu_ms_per_img":
         thread_path["torch"], "machine": gpu.machine("cpu"),
         "processes": [gpu.host_processes(clip, split, blobs, texts, a.batch_size, p, a.repeats, shm, resize)
                       for p in a.processes for shm, resize in ((True, "pil"), (False, "pil"), (True, "torch"))]}
    print(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
