"""GPU measurements in one prepared run: clip_score stage vs model-only, curate train vs open_clip_train,
recaption stage vs generate-only. Writes one JSON and prints the ratios.

    python bench/gpu.py                       # on a GPU machine: ViT-B-32 scale, about 5 minutes
    python bench/gpu.py --parts clip train protocol   # also the DataComp-small protocol at a short scale
    python bench/gpu.py --device cpu --tiny   # the same code paths at toy scale (tests/test_bench_gpu.py)
    python bench/gpu.py --record results.json # write the "gpu" section of bench/RESULTS.md from a run's JSON

Why one script: a lent GPU machine is short-lived and bare (no network, nothing installed but its image),
so everything is generated there and measured in one call. Models are random-init (throughput does not
depend on the weights; nothing is downloaded). Images are demo-renderer JPEGs (real JPEG bytes, so the
decode cost is real), a few thousand unique ones tiled to the sample count.

1. clip_score: the stage through runner._StageActor (JPEG bytes in, scores out: decode thread pool one
   batch ahead of the model, bf16 autocast) at several decode-thread counts, with and without
   device_preprocess, and with `decode_processes` (host work in worker processes; cores - 1 on a GPU);
   against the model's image + text forward alone on pre-decoded tensors already on the device; and the host
   decode path alone (no model; threads and processes, with CPU time per image) to show which side limits.
2. train: `curate train` (curate.train.loop.train, a subprocess) against open_clip_train
   (curate.train.open_clip_launch, a subprocess) on the same shards written with curate's shard writer,
   same model, batch, workers, optimiser settings and bf16; steady-state samples/s after --skip steps.
3. caption: the `recaption` stage against the CoCa model's own generate on pre-decoded batches
   (bench/caption.py's bench_backend), in a subprocess, since open_clip's CoCa generate needs
   transformers < 4.57 (pass --caption-pythonpath to a folder holding one when the image has 5.x).
4. protocol (only with --parts protocol): examples/datacomp_small_protocol.py at a short scale on the train
   part's shards (curated = half of them), recording each run's samples/s and data_wait_frac (its report
   needs matplotlib: add it to the wheels below when the image lacks it).

On a bare GPU image (torch, torchvision, timm, pyarrow, pillow present) the run needs this repo with
filters/ and pipelines/ copied to curate/filters and curate/pipelines (what `pip install .` does), and
these wheels installed with `pip install --no-deps --target /tmp/site` and /tmp/site on PYTHONPATH:
pydantic, pydantic_core, annotated-types, typing-inspection, braceexpand, webdataset, ftfy, wcwidth,
open_clip_torch (which holds open_clip_train); for CoCa, transformers 4.56.2 + tokenizers 0.22.2 +
huggingface_hub 0.36.2 in another --target folder given as --caption-pythonpath. That is how
bench/results/gpu-h200.json was made (about 4.5 minutes on one H200).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PY = sys.executable

FULL = dict(clip_model="ViT-B-32", clip_n=4096, unique=2048, clip_bs=512, image_px=256, repeats=2,
            train_model="ViT-B-32", train_bs=256, train_workers=12, shards=24, per_shard=1024, skip=10,
            lr=5e-4, cap_model="coca_ViT-B-32", cap_n=128, cap_bs=64, cap_tokens=20, cap_repeats=1,
            proto_scale="gpu-smoke", proto_samples=65536, proto_seeds=2, proto_eval=1000)
# the host-decode measurement on a CPU machine: a tiny model, so decode vs model is visible on a few cores
CPU = dict(clip_model="curate-tiny", clip_n=384, unique=128, clip_bs=64, image_px=256, repeats=1,
           train_model="curate-tiny", train_bs=32, train_workers=1, shards=2, per_shard=256, skip=2,
           lr=1e-3, cap_model="curate-tiny-coca", cap_n=8, cap_bs=4, cap_tokens=8, cap_repeats=1)
TINY = dict(clip_model="curate-tiny", clip_n=8, unique=8, clip_bs=4, image_px=64, repeats=1,
            train_model="curate-tiny", train_bs=8, train_workers=1, shards=2, per_shard=16, skip=1,
            lr=1e-3, cap_model="curate-tiny-coca", cap_n=4, cap_bs=2, cap_tokens=4, cap_repeats=1,
            proto_scale="cpu-tiny", proto_samples=32, proto_seeds=2, proto_eval=16)


def env(extra_path: str = "") -> dict[str, str]:
    """A child's environment: this repo importable (curate is not installed on a bare GPU machine), offline."""
    e = dict(os.environ)
    parts = [p for p in (extra_path, str(ROOT), e.get("PYTHONPATH", "")) if p]
    e.update(PYTHONPATH=os.pathsep.join(parts), HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    return e


def _render(args: tuple[int, int]) -> tuple[bytes, str]:
    import numpy as np

    from curate.demo import captions, images

    i, size = args
    im, a = images.render(i, width=size, height=size)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue(), captions.caption(a, np.random.default_rng(i))


def corpus(n: int, unique: int, size: int) -> tuple[list[bytes], list[str]]:
    """n (JPEG, caption) pairs: `unique` demo renders (in parallel) tiled to n."""
    from multiprocessing import get_context

    jobs = [(i, size) for i in range(unique)]
    if unique >= 64:
        with get_context("fork").Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
            pairs = pool.map(_render, jobs, chunksize=16)
    else:
        pairs = [_render(j) for j in jobs]
    return [pairs[i % unique][0] for i in range(n)], [pairs[i % unique][1] for i in range(n)]


T0 = time.perf_counter()


def progress(msg: str) -> None:
    """A timestamped line on stderr: a run cut short by its time limit still shows where it was."""
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fn, repeats: int, device: str) -> float:
    """Fastest wall time of `repeats` calls after one warm-up call (allocator, cudnn/cublas plans)."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (decode processes count once joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ---------------------------------------------------------------------------------------------- clip_score


def bench_clip(s: dict, device: str, threads: list[int], blobs: list[bytes], texts: list[str],
               procs: list[int] = ()) -> dict:
    import torch
    from concurrent.futures import ThreadPoolExecutor

    from bench.score import part_table
    from curate.runner import _StageActor
    from curate.scorers.clip_score import ClipScore, decode_batch, split_preprocess

    n, bs, reps = len(blobs), s["clip_bs"], s["repeats"]
    table, run_schema = part_table(blobs, texts)
    # random_init (here and below): a speed bench, the weights do not change the work (and nothing is downloaded)
    base = ClipScore(model=s["clip_model"], random_init=True, device=device, batch_size=bs,
                     decode_threads=max(threads))
    base.setup()
    clip = base._clip
    out: dict = {"model": s["clip_model"], "device": clip.device, "dtype": str(clip.dtype), "n": n, "batch_size": bs,
                 "image_px": s["image_px"], "jpeg_bytes_mean": sum(map(len, blobs)) / n, "stage": []}

    # model only: every batch decoded, preprocessed, tokenised and moved to the device before the clock
    with ThreadPoolExecutor(max(threads)) as pool:
        decoded = list(pool.map(lambda lo: decode_batch(clip, blobs[lo:lo + bs], texts[lo:lo + bs], base.fast_decode),
                                range(0, n, bs)))
    batches = [(px.to(clip.device), tok.to(clip.device)) for px, tok, _ in decoded]
    del decoded
    sync(clip.device)

    def model_only():
        with torch.inference_mode(), clip._autocast():
            for px, tok in batches:
                clip.model.encode_image(px)
                clip.model.encode_text(tok)

    progress("clip: batches decoded for model-only")
    c0 = cpu_seconds()
    t = best_of(model_only, reps, clip.device)
    out["model_only_ips"] = n / t
    out["model_only_cpu_ms_per_img"] = 1e3 * (cpu_seconds() - c0) / (n * (reps + 1))
    progress(f"clip: model-only {n / t:.0f} img/s")
    batches.clear()  # free the device copies before the stage runs

    split = split_preprocess(clip.preprocess)
    scores = {}
    for nthreads, dev_pre in [(k, True) for k in threads] + [(max(threads), False)]:
        stage = ClipScore(model=s["clip_model"], random_init=True, device=device, batch_size=bs,
                          decode_threads=nthreads, device_preprocess=dev_pre)
        stage._clip = clip  # the loaded model, shared: one load for all variants
        actor = _StageActor(stage, run_schema)
        res = {}

        def pipeline():
            res["t"] = actor(table)

        c0 = cpu_seconds()
        t = best_of(pipeline, reps, clip.device)
        cpu = 1e3 * (cpu_seconds() - c0) / (n * (reps + 1))
        col = res["t"].column("clip_score")
        assert col.null_count == 0, "clip_score left rows unscored"
        scores[(nthreads, dev_pre)] = col.to_numpy()
        out["stage"].append({"decode_threads": nthreads, "device_preprocess": dev_pre, "ips": n / t,
                             "ratio": (n / t) / out["model_only_ips"], "cpu_ms_per_img": cpu,
                             "cpu_ratio": out["model_only_cpu_ms_per_img"] / cpu})
        progress(f"clip: stage {nthreads} threads device_preprocess {dev_pre}: {n / t:.0f} img/s")
    # decode + preprocess + tokenise in worker processes (uint8 pixels, normalised on the device); the most
    # processes also with resize: torch (the resize as torch uint8 ops: about a third of PIL's host cost)
    for p, resize in [(p, "pil") for p in procs] + [(max(procs), "torch")] * bool(procs):
        stage = ClipScore(model=s["clip_model"], random_init=True, device=device, batch_size=bs,
                          decode_processes=p, resize=resize)
        stage._clip = clip
        actor = _StageActor(stage, run_schema)
        res = {}

        def pipeline():
            res["t"] = actor(table)

        c0 = cpu_seconds()
        try:
            t = best_of(pipeline, reps, clip.device)  # the warm-up call also starts the workers
        finally:
            stage.close()  # joins the workers: their CPU time is now in the children fields
        cpu = 1e3 * (cpu_seconds() - c0) / (n * (reps + 1))
        col = res["t"].column("clip_score")
        assert col.null_count == 0, "clip_score left rows unscored"
        ref = scores[(max(threads), True)]
        out["stage"].append({"decode_threads": 0, "decode_processes": p, "resize": resize, "device_preprocess": True,
                             "ips": n / t,
                             "ratio": (n / t) / out["model_only_ips"], "cpu_ms_per_img": cpu,
                             "cpu_ratio": out["model_only_cpu_ms_per_img"] / cpu,
                             "max_abs_score_diff_vs_threads": float(abs(col.to_numpy() - ref).max())})
        progress(f"clip: stage {p} decode processes, resize {resize}: {n / t:.0f} img/s")
    if len(scores) > 1:  # device_preprocess must not change the scores beyond bf16 noise
        import numpy as np

        a, b = scores[(max(threads), True)], scores[(max(threads), False)]
        out["device_preprocess_max_abs_score_diff"] = float(np.max(np.abs(a - b)))

    # the host side alone: decode + preprocess + tokenise on the same thread pool, no model
    def decode_only(nthreads: int, pil_part, m: int):
        def run():
            with ThreadPoolExecutor(nthreads) as pool:
                step = -(-bs // nthreads)
                futs = [pool.submit(decode_batch, clip, blobs[a:min(m, a + step)], texts[a:min(m, a + step)],
                                    base.fast_decode, pil_part) for a in range(0, m, step)]
                for f in futs:
                    f.result()
        return run

    out["decode_only"] = []
    for nthreads in sorted({1, *threads}):
        m = min(n, 256 * nthreads)  # enough batches to fill the pool, few enough for one thread
        for pil_part in ([split[0]] if split else []) + [None]:
            t = best_of(decode_only(nthreads, pil_part, m), max(1, reps - 1), "cpu")
            out["decode_only"].append({"threads": nthreads, "uint8": pil_part is not None, "ips": m / t})
            progress(f"clip: decode only {nthreads} threads uint8 {pil_part is not None}: {m / t:.0f} img/s")
    out["decode_only_processes"] = [host_processes(clip, split, blobs, texts, bs, p, max(1, reps - 1), shm, resize)
                                    for p in procs for shm in (True, False) for resize in ("pil", "torch")
                                    if resize == "pil" or (shm and p == max(procs))]
    for x in out["decode_only_processes"]:
        progress(f"clip: decode only {x['processes']} processes (shm {x['shm']}): {x['ips']:.0f} img/s, worker CPU "
                 f"{x['worker_cpu_ms_per_img']:.2f} ms/img, parent CPU {x['parent_cpu_ms_per_img']:.3f} ms/img")
    # the tokenizer alone, one thread: the part of the host work that holds the GIL throughout
    t0 = time.perf_counter()
    for lo in range(0, n, bs):
        clip.tokenizer(texts[lo:lo + bs])
    out["tokenize_only_ips_1thread"] = n / (time.perf_counter() - t0)
    return out


def host_processes(clip, split, blobs: list[bytes], texts: list[str], bs: int, procs: int, repeats: int,
                   shm: bool = True, resize: str = "pil") -> dict:
    """The host side alone in `procs` decode processes (clip_score's decode_processes path, no model).

    Besides img/s (wall, distorted on a loaded machine) it reports CPU time per image in the workers and in
    this process (receiving the chunks, handing the pixels on: to the GPU when there is one, else a host
    copy standing in for the pageable copy to it): the workers' cost divides over the cores, the parent's
    does not, so together they bound what N cores can reach. shm: pixels through shared-memory slots (the
    stage's way) or through the result pipe (its fallback). resize: the stage's `resize` (pil or torch).
    """
    import torch

    from curate.scorers import clip_score, decode_pool

    m = min(len(blobs), max(bs, 256) * procs)
    step = -(-bs // procs)
    side = clip_score.input_size(clip)
    transform = split[0] if split else clip.preprocess
    if resize == "torch" and split:
        from curate.scorers.tensor_resize import tensor_part

        transform = tensor_part(split[0]) or transform
    gpu = torch.cuda.is_available()
    slots = decode_pool.PixelSlots(-(-m // step), step, (side, side, 3)) if shm and split else None
    before = os.times()
    pool = decode_pool.start(procs, transform, clip.tokenizer, side)

    def hand_on(fut, slot):
        pixels = clip_score._to_torch(fut.result(), gpu, slots, slot)[0]
        if pixels is not None:
            pixels.to("cuda") if gpu else pixels.clone()
        if slot is not None:
            slots.release(slot)

    def run(lo_hi):
        futs = []
        for a in range(*lo_hi):
            slot = slots.acquire() if slots else None
            futs.append((pool.submit(decode_pool.decode_in_worker, blobs[a * step:min(m, (a + 1) * step)],
                                     [texts[a * step:min(m, (a + 1) * step)]], slot), slot))
        for f, slot in futs:
            hand_on(f, slot)

    try:
        run((0, procs))  # workers started and warm
        best, parent_cpu = float("inf"), float("inf")
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            run((0, -(-m // step)))
            best = min(best, time.perf_counter() - t0)
            parent_cpu = min(parent_cpu, time.process_time() - c0)
    finally:
        pool.shutdown()
        if slots is not None:
            slots.close()
    after = os.times()  # the joined workers' CPU time lands in the children fields
    worker_cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    images = m * repeats + step * procs
    return {"processes": procs, "shm": slots is not None, "resize": resize, "ips": m / best,
            "worker_cpu_ms_per_img": 1e3 * worker_cpu / images, "parent_cpu_ms_per_img": 1e3 * parent_cpu / m,
            "images": m, "start_method": decode_pool.start_method()}


# --------------------------------------------------------------------------------------------------- train


def write_shards(root: Path, s: dict, blobs: list[bytes], texts: list[str]) -> list[str]:
    """s['shards'] WebDataset tars of s['per_shard'] samples each, written by curate's shard writer."""
    from curate.io.shard_writer import write_tar

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(s["shards"]):
        rows = []
        for j in range(s["per_shard"]):
            i = k * s["per_shard"] + j
            rows.append({"key": f"s{k:04d}_{j:06d}", "uid": f"u{i}", "image": blobs[i % len(blobs)],
                         "text": texts[i % len(texts)]})
        path = root / f"{k:06d}.tar"
        write_tar(path, rows)
        paths.append(str(path))
    return paths


CURATE_CHILD = """
import json, sys
from curate.train.loop import TrainConfig, train
train(TrainConfig(**json.loads(sys.argv[1])))
"""


def run_curate_train(shards: list[str], out: Path, s: dict, device: str, timeout: float) -> dict:
    cfg = dict(shards=shards, output=str(out), model=s["train_model"], samples_seen=len(shards) * s["per_shard"],
               batch_size=s["train_bs"], workers=s["train_workers"], log_every=1, lr=s["lr"], warmup=10,
               device=device, precision="auto")
    t0 = time.perf_counter()
    p = subprocess.run([PY, "-c", CURATE_CHILD, json.dumps(cfg)], env=env(), capture_output=True, text=True,
                       timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode:
        return {"error": (p.stderr or p.stdout)[-2000:], "wall_s": wall}
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    k = min(s["skip"], len(log) - 1)
    steady = log[k:]
    dt = log[-1]["elapsed_s"] - log[k - 1]["elapsed_s"] if k else log[-1]["elapsed_s"]
    n = log[-1]["samples_seen"] - (log[k - 1]["samples_seen"] if k else 0)
    summary = json.loads((out / "summary.json").read_text())
    return {"samples_per_s": n / dt, "wall_s": wall, "steps": log[-1]["step"], "precision": summary["precision"],
            "device": summary["device"], "workers": summary["workers"],
            "data_wait_frac": sum(r["data_wait_frac"] for r in steady) / len(steady),
            "first_loss": summary["first_loss"], "final_loss": summary["final_loss"]}


def run_open_clip_train(shards: list[str], out: Path, s: dict, device: str, timeout: float) -> dict:
    cuda = device.startswith("cuda")
    cmd = [PY, "-m", "curate.train.open_clip_launch", "--model", s["train_model"], "--dataset-type", "webdataset",
           "--train-data", "::".join(shards), "--train-num-samples", str(len(shards) * s["per_shard"]),
           "--batch-size", str(s["train_bs"]), "--epochs", "1", "--workers", str(s["train_workers"]),
           "--lr", str(s["lr"]), "--warmup", "10", "--precision", "amp_bf16" if cuda else "fp32",
           "--log-every-n-steps", "1", "--save-frequency", "1", "--logs", str(out), "--name", "b",
           "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--wd", "0.1"]
    if not cuda:
        cmd += ["--device", "cpu"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    logf = out / "b" / "out.log"
    if p.returncode or not logf.is_file():
        return {"error": (p.stderr or p.stdout)[-2000:], "wall_s": wall}
    text = logf.read_text()
    rates = [float(x) for x in re.findall(r"Batch \(t\): [0-9.]+, ([0-9.]+)/s,", text)]
    data_t = [float(x) for x in re.findall(r"Data \(t\): ([0-9.]+)", text)]
    batch_t = [float(x) for x in re.findall(r"Batch \(t\): ([0-9.]+),", text)]
    steady = rates[min(s["skip"], len(rates) - 1):]
    # per-step instantaneous rates; the harmonic mean is total samples / total time
    return {"samples_per_s": len(steady) / sum(1 / r for r in steady), "wall_s": wall, "steps": len(rates),
            "data_wait_frac": data_t[-1] / batch_t[-1] if batch_t else float("nan")}


def bench_train(s: dict, device: str, work: Path, blobs: list[bytes], texts: list[str], timeout: float) -> dict:
    shards = write_shards(work / "shards", s, blobs, texts)
    out = {"model": s["train_model"], "batch_size": s["train_bs"], "workers": s["train_workers"],
           "shards": len(shards), "samples": len(shards) * s["per_shard"], "skip": s["skip"]}
    progress("train: shards written")
    out["open_clip_train"] = run_open_clip_train(shards, work / "oc", s, device, timeout)
    progress(f"train: open_clip_train {out['open_clip_train'].get('samples_per_s')}")
    out["curate"] = run_curate_train(shards, work / "cu", s, device, timeout)
    progress(f"train: curate {out['curate'].get('samples_per_s')}")
    a, b = out["curate"].get("samples_per_s"), out["open_clip_train"].get("samples_per_s")
    out["ratio"] = a / b if a and b else None
    return out


# ------------------------------------------------------------------------------------------------ protocol


def bench_protocol(s: dict, device: str, work: Path, blobs: list[bytes], texts: list[str], timeout: float) -> dict:
    """examples/datacomp_small_protocol.py at a short scale (a subprocess, as a user runs it): curated = half of
    the bench shards, raw = all of them, a random subset of raw as the control, a demo-renderer labelled eval
    set. Records each run's samples/s and data_wait_frac (the protocol's own protocol.json)."""
    from curate.demo import splits

    shards = write_shards(work / "shards", s, blobs, texts)
    ev = work / "eval"
    if not (ev / "classes.json").is_file():
        splits.write_split(ev, s["proto_eval"], 0, 101, balanced=True)
        splits.write_classes(ev / "classes.json")
    out = work / "protocol"
    cmd = [PY, str(ROOT / "examples" / "datacomp_small_protocol.py"), "--scale", s["proto_scale"],
           "--curated", *shards[: max(1, len(shards) // 2)], "--raw", *shards, "--eval-set", str(ev),
           "--seeds", str(s["proto_seeds"]), "--samples-seen", str(s["proto_samples"]), "--device", device,
           "-o", str(out)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    res: dict = {"scale": s["proto_scale"], "samples_seen": s["proto_samples"], "seeds": s["proto_seeds"],
                 "wall_s": time.perf_counter() - t0}
    if p.returncode:
        res["error"] = (p.stderr or p.stdout)[-2000:]
        return res
    proto = json.loads((out / "protocol.json").read_text())
    res.update(runs=proto["runs"], verdicts=proto["verdicts"], global_batch=proto["global_batch"],
               model=proto["settings"]["model"], workers=proto["settings"]["workers"])
    return res


# ------------------------------------------------------------------------------------------------- caption

CAPTION_CHILD = """
import json, sys, tempfile
from pathlib import Path
s = json.loads(sys.argv[1])
import open_clip, torch, transformers
sys.path.insert(0, s["root"])
from bench.caption import bench_backend, jpegs
from curate.caption.recaption import Recaption
from curate.train import checkpoints, configs
configs.register()
work = Path(tempfile.mkdtemp(prefix="gpu-caption-"))
torch.manual_seed(0)
ckpt = checkpoints.save(work / "coca.pt", {"state_dict": open_clip.create_model(s["model"]).state_dict(),
                                           "config": {"model": s["model"]}})
images = jpegs(s["n"], s["px"])
common = dict(max_tokens=s["tokens"], min_tokens=0, batch_size=s["bs"], device=s["device"], on_truncated="keep")
for label, kw in (("coca beam3", dict(decoding="beam", num_beams=3)), ("coca top-p", dict(decoding="top_p"))):
    r = bench_backend(label, Recaption(backend="coca", checkpoint=str(ckpt), **kw, **common), images, s["repeats"])
    r["transformers"] = transformers.__version__
    print("RESULT " + json.dumps(r), flush=True)
"""


def bench_caption(s: dict, device: str, extra_path: str, timeout: float) -> dict:
    spec = dict(root=str(ROOT), model=s["cap_model"], n=s["cap_n"], bs=s["cap_bs"], tokens=s["cap_tokens"],
                px=s["image_px"], repeats=s["cap_repeats"], device=device)
    out: dict = {"model": s["cap_model"], "n": s["cap_n"], "batch_size": s["cap_bs"], "max_tokens": s["cap_tokens"],
                 "backends": []}
    try:
        p = subprocess.run([PY, "-c", CAPTION_CHILD, json.dumps(spec)], env=env(extra_path), capture_output=True,
                           text=True, timeout=timeout)
        stdout, rc, tail = p.stdout, p.returncode, p.stderr[-2000:]
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        rc, tail = "timeout", f"timed out after {timeout:.0f} s"
    out["backends"] = [json.loads(x[7:]) for x in stdout.splitlines() if x.startswith("RESULT ")]
    if rc:
        out["error"] = f"exit {rc}: {tail}"
    return out


# ---------------------------------------------------------------------------------------------- reporting


def machine(device: str) -> dict:
    from bench._common import machine_info

    info = machine_info(["torch", "torchvision", "open_clip_torch", "transformers", "pillow", "numpy", "webdataset"])
    import torch

    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def _via(x: dict) -> str:
    """How a decode-process measurement moved the pixels (results before shared memory have no 'shm' key)."""
    via = "via shared memory" if x.get("shm") else "via the pipe"
    return via + (", resize torch" if x.get("resize") == "torch" else "")


def _decoders(x: dict) -> str:
    p = x.get("decode_processes")
    torch_resize = " resize torch" if x.get("resize") == "torch" else ""
    return f"decode_processes {p:2d}{torch_resize}" if p else f"decode_threads   {x['decode_threads']:2d}"


def summary_lines(r: dict) -> list[str]:
    lines = []
    c = r.get("clip")
    if c:
        lines.append(f"clip_score {c['model']} {c['device']}: model-only {c['model_only_ips']:.0f} img/s")
        for x in c["stage"]:
            lines.append(f"  stage {_decoders(x)} device_preprocess {x['device_preprocess']!s:5}: "
                         f"{x['ips']:8.0f} img/s  ratio {x['ratio']:.3f}  CPU {x.get('cpu_ms_per_img', 0):.2f} ms/img "
                         f"(CPU-time ratio {x.get('cpu_ratio', 0):.3f})")
        for x in c.get("decode_only_processes") or []:
            lines.append(f"  host decode only, {x['processes']:2d} processes, {_via(x)}: {x['ips']:8.0f} img/s  worker CPU "
                         f"{x['worker_cpu_ms_per_img']:.2f} ms/img  parent CPU {x['parent_cpu_ms_per_img']:.3f} ms/img")
        for x in c["decode_only"]:
            lines.append(f"  host decode only, {x['threads']:2d} threads, {'uint8' if x['uint8'] else 'float'}: "
                         f"{x['ips']:8.0f} img/s")
        lines.append(f"  tokenizer alone, 1 thread: {c['tokenize_only_ips_1thread']:.0f} captions/s")
    t = r.get("train")
    if t:
        for k in ("open_clip_train", "curate"):
            x = t[k]
            lines.append(f"train {k:16s} " + (f"{x['samples_per_s']:8.1f} samples/s  data_wait {x['data_wait_frac']:.3f}"
                                               if "samples_per_s" in x else f"FAILED {x['error'][-300:]}"))
        if t.get("ratio"):
            lines.append(f"  curate / open_clip_train: {t['ratio']:.3f}")
    pr = r.get("protocol")
    if pr:
        for x in pr.get("runs") or []:
            lines.append(f"protocol {pr['scale']} {x['set']:8s} seed {x['seed']}: {x['samples_per_s']:8.1f} samples/s "
                         f"data_wait {x['data_wait_frac']:.3f}{'  loader-bound' if x['loader_bound'] else ''}")
        if pr.get("error"):
            lines.append(f"protocol error: {pr['error'][-300:]}")
    cap = r.get("caption")
    if cap:
        for x in cap["backends"]:
            lines.append(f"caption {x['backend']:10s} model {x['model_caps_s']:8.1f} cap/s  stage {x['stage_caps_s']:8.1f} "
                         f"cap/s  ratio {x['ratio']:.3f}")
        if cap.get("error"):
            lines.append(f"caption error: {cap['error'][-300:]}")
    return lines


def record(r: dict, source: str) -> Path:
    """Write the `gpu` section of bench/RESULTS.md from one run's results (tables only; notes are by hand)."""
    from bench._common import update_results

    m = dict(r["machine"])
    lines = [f"`python bench/gpu.py {' '.join(r['argv'])}` on a lent GPU machine (results JSON: {source}); "
             "random-init models, demo-renderer JPEGs. Every number is from that one run.", ""]
    c = r.get("clip")
    if c:
        lines += [f"**clip_score** {c['model']} ({c['dtype']} autocast), {c['n']} JPEGs of {c['image_px']} px "
                  f"(mean {c['jpeg_bytes_mean'] / 1000:.1f} kB), batch {c['batch_size']}, best of "
                  f"{r['settings']['repeats']}. Model-only = image + text forward on pre-decoded tensors already on "
                  f"the device: **{c['model_only_ips']:.0f} img/s**.", "",
                  "| stage decoders | device_preprocess | stage img/s | stage / model-only |", "|---|---|---|---|"]
        lines += [f"| {_decoders(x).replace('_', ' ')} | {x['device_preprocess']} | {x['ips']:.0f} | **{x['ratio']:.2f}** |"
                  for x in c["stage"]]
        if c.get("decode_only_processes"):
            lines += ["", "Host side alone in decode processes (clip_score decode_processes, no model): " + ", ".join(
                f"{x['processes']} process(es) {_via(x)} {x['ips']:.0f} img/s (worker CPU {x['worker_cpu_ms_per_img']:.2f} ms/img, "
                f"scoring-process CPU {x['parent_cpu_ms_per_img']:.3f} ms/img)" for x in c["decode_only_processes"]) + "."]
        lines += ["", "Host side alone (decode + preprocess + tokenise on the same thread pool, no model): " + ", ".join(
            f"{x['threads']} thread(s) {'uint8' if x['uint8'] else 'float'} {x['ips']:.0f} img/s" for x in c["decode_only"])
                  + f"; the tokenizer alone on one thread: {c['tokenize_only_ips_1thread']:.0f} captions/s. "
                  + (f"Largest |score difference| with vs without device_preprocess: "
                     f"{c['device_preprocess_max_abs_score_diff']:.2g}." if "device_preprocess_max_abs_score_diff" in c
                     else ""), ""]
    t = r.get("train")
    if t:
        lines += [f"**train** {t['model']}, batch {t['batch_size']}, {t['workers']} loader workers, {t['shards']} shards "
                  f"({t['samples']} samples, written by curate's shard writer), bf16 autocast, AdamW lr "
                  f"{r['settings']['lr']}, steady state after {t['skip']} steps.", "",
                  "| trainer | samples/s | data-wait fraction | wall s (with start-up) |", "|---|---|---|---|"]
        for k, label in (("open_clip_train", "open_clip_train (amp_bf16)"), ("curate", "curate train")):
            x = t[k]
            lines.append(f"| {label} | {x['samples_per_s']:.0f} | {x['data_wait_frac']:.3f} | {x['wall_s']:.0f} |"
                         if "samples_per_s" in x else
                         f"| {label} | failed: `{x['error'].strip().splitlines()[-1][:160]}` | - | {x['wall_s']:.0f} |")
        if t.get("ratio"):
            lines += ["", f"curate / open_clip_train: **{t['ratio']:.2f}**"]
        lines.append("")
    cap = r.get("caption")
    if cap:
        lines += [f"**recaption** {cap['model']} (random init), {cap['n']} images, batch {cap['batch_size']}, "
                  f"max {cap['max_tokens']} tokens, wall time after a synchronise.", ""]
        if cap["backends"]:
            lines += ["| decoding | generate-only cap/s | tok/s | recaption stage cap/s | stage / generate | transformers |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {x['backend']} | {x['model_caps_s']:.1f} | {x['model_tok_s']:.0f} | {x['stage_caps_s']:.1f} | "
                      f"**{x['ratio']:.2f}** | {x['transformers']} |" for x in cap["backends"]]
        if cap.get("error"):
            lines += ["", f"Caption run error: `{cap['error'].strip().splitlines()[-1][:300]}`"]
    pr = r.get("protocol")
    if pr and pr.get("runs"):
        lines += [f"**protocol** examples/datacomp_small_protocol.py --scale {pr['scale']}, {pr['model']}, "
                  f"{pr['samples_seen']} samples seen per run, global batch {pr['global_batch']}, {pr['workers']} "
                  f"loader workers, {pr['seeds']} seeds (bench shards; throughput, not a data-quality result).", "",
                  "| arm | seed | samples/s | data_wait_frac |", "|---|---|---|---|"]
        lines += [f"| {x['set']} | {x['seed']} | {x['samples_per_s']:.0f} | {x['data_wait_frac']:.3f} |" for x in pr["runs"]]
        lines.append("")
    for part in ("clip", "train", "caption", "protocol"):
        if r.get(f"{part}_error"):
            lines += ["", f"{part} failed: `{r[part + '_error'].strip().splitlines()[-1][:300]}`"]
    return update_results("gpu", "\n".join(lines), [], info=m)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cuda or cpu")
    ap.add_argument("--tiny", action="store_true", help="toy sizes and curate-tiny models (the CPU test)")
    ap.add_argument("--cpu-scale", action="store_true",
                    help="curate-tiny at a size that measures the host decode on a CPU machine (bench/RESULTS.md gpu-host-decode)")
    ap.add_argument("--parts", nargs="+", default=["clip", "train", "caption"],
                    choices=["clip", "train", "caption", "protocol"],
                    help="protocol (examples/datacomp_small_protocol.py, short scale) runs only when named")
    ap.add_argument("--decode-threads", type=int, nargs="+", help="clip_score decode-thread counts to measure")
    ap.add_argument("--decode-processes", type=int, nargs="*",
                    help="clip_score decode-process counts to measure (default: cores - 1 on a GPU, 1 2 on CPU)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "gpu"), help="scratch folder (shards, runs)")
    ap.add_argument("--json", help="results file (default WORK/results.json)")
    ap.add_argument("--caption-pythonpath", default="", help="prepended to the caption child's PYTHONPATH")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per training / caption subprocess")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads on a GPU run")
    ap.add_argument("--record", metavar="RESULTS_JSON", help="only write bench/RESULTS.md's gpu section from it")
    a = ap.parse_args(argv)
    if a.record:
        print(record(json.loads(Path(a.record).read_text()), a.record))
        return {}
    import torch

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    s = dict(TINY if a.tiny else CPU if a.cpu_scale else FULL)
    cores = os.cpu_count() or 2
    threads = a.decode_threads or ([2] if a.tiny or a.cpu_scale else [max(1, cores - 1)])
    procs = a.decode_processes if a.decode_processes is not None else (
        [max(1, cores - 1)] if device.startswith("cuda") else [1, 2])
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    dest = Path(a.json) if a.json else work / "results.json"
    r: dict = {"argv": sys.argv[1:] if argv is None else argv, "settings": s, "decode_threads": threads,
               "decode_processes": procs}

    def save():
        dest.write_text(json.dumps(r, indent=1))

    t0 = time.perf_counter()
    need = max(s["clip_n"], s["shards"] * s["per_shard"])
    blobs, texts = corpus(need, s["unique"], s["image_px"])  # before CUDA starts: the render pool forks
    r["corpus_s"] = time.perf_counter() - t0
    r["machine"] = machine(device)
    if device.startswith("cuda"):
        # As in a Ray GPU actor (Ray sets OMP_NUM_THREADS to the actor's num_cpus, 1 by default): torch ops
        # on the decode threads must not each start a full intra-op team on a machine the threads fill.
        torch.set_num_threads(a.torch_threads)
    r["torch_threads"] = torch.get_num_threads()
    save()
    progress(f"corpus ready ({r['corpus_s']:.1f} s), torch threads {r['torch_threads']}")
    for part in a.parts:
        t0 = time.perf_counter()
        try:
            if part == "clip":
                r["clip"] = bench_clip(s, device, threads, blobs[:s["clip_n"]], texts[:s["clip_n"]], procs)
            elif part == "train":
                r["train"] = bench_train(s, device, work / "train", blobs, texts, a.timeout)
            elif part == "protocol":
                r["protocol"] = bench_protocol(s, device, work / "train", blobs, texts, 4 * a.timeout)
            else:
                r["caption"] = bench_caption(s, device, a.caption_pythonpath, a.timeout)
        except Exception as err:  # noqa: BLE001 - one part failing must not lose the others' numbers
            import traceback

            r[f"{part}_error"] = traceback.format_exc()[-3000:]
            print(f"{part} FAILED: {err!r}", file=sys.stderr, flush=True)
        r[f"{part}_s"] = time.perf_counter() - t0
        save()
        print("\n".join(summary_lines({part: r.get(part)})), flush=True)
    print(f"results: {dest}")
    return r


if __name__ == "__main__":
    main()
