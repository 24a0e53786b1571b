"""Recaption benchmark: the `recaption` stage against the model's own `generate` on the same batches, in one run.

Usage: python bench/caption.py [--n 256] [--batch-size 32] [--repeats 3] [--device auto] [--no-record]

For each backend (open_clip CoCa beam search, open_clip CoCa top-p, a transformers BLIP) it builds the
model here (curate-tiny-coca and the tiny BLIP from curate/caption/tiny.py, random weights: the
benchmark measures the machinery, not caption quality), then times, interleaved, best of --repeats:
  - model only: `generate` on batches that were decoded and preprocessed before the clock started;
  - stage: `Recaption.process` on a table of JPEG bytes (decode, preprocess, generate, detokenise,
    flags, columns).
Ratio = stage captions/s / model-only captions/s (target >= 0.8). Tokens/s counts generated tokens.
On CPU the times are process CPU time (the machine is shared; wall time measures the neighbours);
on CUDA they are wall time after a synchronise.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def jpegs(n: int, size: int = 64) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = np.clip(rng.integers(0, 255, 3)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def table(images: list[bytes]):
    import pyarrow as pa

    n = len(images)
    return pa.table({"uid": [f"u{i}" for i in range(n)], "part": pa.array([0] * n, pa.int32()),
                     "text": ["IMG_0001.jpg"] * n, "image": pa.array(images, pa.binary()), "status": ["ok"] * n,
                     "stage": pa.nulls(n, pa.string()), "reason": pa.nulls(n, pa.string()),
                     "error": pa.nulls(n, pa.string())})


def clock(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def bench_backend(label: str, stage, images: list[bytes], repeats: int) -> dict:
    from PIL import Image

    stage.setup()
    cap = stage._captioner
    device = getattr(getattr(cap, "clip", None), "device", None) or getattr(cap, "dev", "cpu")
    t = table(images)
    bs = stage.batch_size
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    batches = [cap.preprocess(pil[i:i + bs]) for i in range(0, len(pil), bs)]
    stage.process(table(images[:bs]))  # warm up both paths
    model_s, stage_s, tokens = [], [], 0
    for _ in range(repeats):
        t0 = clock(device)
        outs = [cap.generate(b) for b in batches]
        model_s.append(clock(device) - t0)
        tokens = sum(c.tokens for b, o in zip(batches, outs) for c in cap.decode(b, o))
        t0 = clock(device)
        out = stage.process(t)
        stage_s.append(clock(device) - t0)
        assert out.num_rows == len(images)
    n = len(images)
    m, s = min(model_s), min(stage_s)
    return {"backend": label, "device": device, "n": n, "batch": bs, "model_caps_s": n / m, "stage_caps_s": n / s,
            "model_tok_s": tokens / m, "stage_tok_s": tokens / s, "ratio": m / s, "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    import open_clip
    import torch

    from curate.caption.recaption import Recaption
    from curate.caption.tiny import build_tiny_blip
    from curate.train import checkpoints, configs

    torch.set_num_threads(a.threads)
    configs.register()
    work = Path(tempfile.mkdtemp(prefix="bench-caption-"))
    torch.manual_seed(0)
    ckpt = checkpoints.save(work / "coca.pt", {"state_dict": open_clip.create_model("curate-tiny-coca").state_dict(),
                                               "config": {"model": "curate-tiny-coca"}})
    blip = build_tiny_blip(work / "blip")
    images = jpegs(a.n)
    common = dict(max_tokens=a.max_tokens, batch_size=a.batch_size, device=a.device, on_truncated="keep")
    runs = [("coca beam3", Recaption(backend="coca", checkpoint=str(ckpt), decoding="beam", num_beams=3, **common)),
            ("coca top-p", Recaption(backend="coca", checkpoint=str(ckpt), decoding="top_p", **common)),
            ("blip beam3", Recaption(backend="transformers", model=str(blip), decoding="beam", num_beams=3,
                                     **common))]
    rows = []
    for label, stage in runs:
        r = bench_backend(label, stage, images, a.repeats)
        rows.append(r)
        print(f"{label:12s} {r['device']:5s} model {r['model_caps_s']:8.1f} cap/s {r['model_tok_s']:9.0f} tok/s | "
              f"stage {r['stage_caps_s']:8.1f} cap/s {r['stage_tok_s']:9.0f} tok/s | ratio {r['ratio']:.2f}", flush=True)
    if a.no_record:
        return
    from bench._common import update_results

    dev = rows[0]["device"]
    unit = "wall time" if dev.startswith("cuda") else "process CPU time, 1 torch thread"
    lines = [f"`python bench/caption.py --n {a.n} --batch-size {a.batch_size} --max-tokens {a.max_tokens}` "
             f"({dev}, {unit}, best of {a.repeats}; random-weight tiny models, 64 px JPEGs).", "",
             "| backend | model generate cap/s | tok/s | recaption stage cap/s | tok/s | stage / model |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['model_caps_s']:.1f} | {r['model_tok_s']:.0f} | {r['stage_caps_s']:.1f} | "
                     f"{r['stage_tok_s']:.0f} | {r['ratio']:.2f} |")
    section = "caption-gpu" if dev.startswith("cuda") else "caption"
    update_results(section, "\n".join(lines), ["torch", "open_clip_torch", "transformers"])


if __name__ == "__main__":
    main()
