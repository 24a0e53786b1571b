"""Checkpoints that open_clip loads unchanged and `curate train --resume` continues from.

Why this layout: `open_clip.create_model_and_transforms(NAME, pretrained=CKPT)` reads the "state_dict"
key (stripping a DDP "module." prefix) with torch.load(weights_only=True), so everything else we keep
(step, optimizer, config, the SigLIP bias) must be plain tensors and Python scalars beside it, and the
model's own state_dict must hold exactly the keys a freshly created NAME model has. Files are written
under a temporary name and renamed, so a killed run never leaves a truncated checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint that does not exist or is not one of ours / open_clip's."""


def save(path: Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def local_copy(path: str | Path) -> Path:
    """A local file for a checkpoint path or URL (s3://, gs://, http(s)://, hf://: fetched through fsspec into
    the machine's cache, curate/io/storage.py); CheckpointError (one line) when it cannot be had."""
    from curate.io import storage

    try:
        return storage.local_file(path, "checkpoint")
    except storage.StorageError as err:
        raise CheckpointError(str(err)) from None


def load(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint dict, with a clear error for missing or unreadable files. `mmap` maps tensors instead
    of reading them (for looking at the config of a large checkpoint)."""
    p = local_copy(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            ckpt = torch.load(p, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mapped
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint dict")
    if "state_dict" not in ckpt:  # a bare state_dict, as some tools save
        ckpt = {"state_dict": ckpt}
    return ckpt


def model_name_of(path: str | Path, default: str | None = None) -> str:
    """The open_clip model name recorded in one of our checkpoints (else `default`)."""
    name = (load(path, mmap=True).get("config") or {}).get("model") or default
    if not name:
        raise CheckpointError(f"{path} does not record its model; pass --model")
    return name


def digest(state_dict: dict) -> str:
    """sha256 over a state_dict's names and tensor bytes: equal weights, equal digest.

    Why: under DDP only rank 0 writes the checkpoint; every rank's summary carries this digest so a
    run (and the tests) can check that all ranks ended with the same weights.
    """
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def strip_module(state_dict: dict) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
