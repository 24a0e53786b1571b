"""Read curate's video-text shards for training: WebDataset yields (<key>.mp4, <key>.txt, <key>.json) and
PyAV decodes `frames` frames, evenly spaced over the clip, into a float tensor (T, 3, H, W) in [0, 1].

    python examples/video_loader.py "out/shards/{000000..000003}.tar" --frames 8 --size 64
"""
from __future__ import annotations

import argparse
import io

import numpy as np


def decode_clip(mp4: bytes, frames: int = 8, size: int = 64) -> np.ndarray:
    """`frames` RGB frames (uniform over the clip, resized to size x size) as uint8 (T, H, W, 3)."""
    import av

    with av.open(io.BytesIO(mp4)) as c:
        all_frames = [f.to_ndarray(width=size, height=size, format="rgb24") for f in c.decode(video=0)]
    if not all_frames:
        raise ValueError("no decodable frame")
    idx = np.linspace(0, len(all_frames) - 1, frames).round().astype(int)
    return np.stack([all_frames[i] for i in idx])


def make_dataset(urls: str, frames: int = 8, size: int = 64):
    """A webdataset pipeline of (video tensor (T, 3, H, W), caption, metadata dict)."""
    import torch
    import webdataset as wds

    def to_sample(s):
        video = torch.from_numpy(decode_clip(s["mp4"], frames, size)).permute(0, 3, 1, 2).float() / 255
        return video, s["txt"], s["json"]

    return wds.WebDataset(urls, shardshuffle=False).decode().map(to_sample)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shards")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args()
    import torch

    ds = make_dataset(args.shards, args.frames, args.size)
    loader = torch.utils.data.DataLoader(ds.batched(args.batch_size), batch_size=None, num_workers=0)
    for videos, texts, metas in loader:
        print(tuple(videos.shape), texts[0], f"[{metas[0]['start']:.2f}, {metas[0]['end']:.2f}] s of {metas[0]['parent_uid']}")


if __name__ == "__main__":
    main()
