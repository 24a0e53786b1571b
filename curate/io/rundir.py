"""The run directory layout (public API) and its manifest.

out/recipe.yaml, out/manifest.json, out/sizes.json, out/shards/NNNNNN.tar, out/meta/part-NNNNNN.parquet,
out/report.html; out/_work/ holds resumable intermediate state and is removed when a run completes.
shards/ holds only the tars, so WebDataset readers that list a folder (Hugging Face `datasets`,
`ray.data.read_webdataset`) read it as it is; the per-shard sample counts are in out/sizes.json.
"""
from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path

from curate.io import atomic, storage

MANIFEST_FORMAT = 1


class RunDir:
    def __init__(self, root: Path | str):
        self.root = storage.as_path(root)  # a Path, or a UPath for a URL (s3://bucket/out): curate/io/storage.py
        self.recipe = self.root / "recipe.yaml"
        self.manifest_path = self.root / "manifest.json"
        self.shards = self.root / "shards"
        self.meta = self.root / "meta"
        self.work = self.root / "_work"
        self.report = self.root / "report.html"
        self.embeddings = self.root / "embeddings"  # sidecar: uid + CLIP embedding vectors per part
        self.sizes = self.root / "sizes.json"  # {"000000.tar": kept samples}, open_clip's sizes.json format

    # final outputs
    def meta_part(self, k: int) -> Path:
        return self.meta / f"part-{k:06d}.parquet"

    def embeddings_part(self, k: int) -> Path:
        return self.embeddings / f"part-{k:06d}.parquet"

    def shard(self, k: int) -> Path:
        return self.shards / f"{k:06d}.tar"

    @staticmethod
    def shard_name(k: int) -> str:
        return f"shards/{k:06d}.tar"

    # intermediate state
    def input_part(self, k: int) -> Path:
        return self.work / "input" / f"part-{k:06d}.parquet"

    def segment_part(self, s: int, k: int) -> Path:
        return self.work / f"segment{s}" / f"part-{k:06d}.parquet"

    def job_dir(self, j: int) -> Path:
        return self.work / f"job{j}"

    def job_part(self, j: int, k: int) -> Path:
        return self.job_dir(j) / f"part-{k:06d}.parquet"

    def done_meta_parts(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in storage.glob(self.meta, "part-*.parquet")}

    def write_sizes(self) -> dict[str, int]:
        """Write sizes.json ({"000000.tar": n}, the format open_clip_train reads) from meta/: kept rows per shard."""
        import pyarrow.dataset as pads

        sizes = {p.name: 0 for p in storage.glob(self.shards, "*.tar")}
        parts = storage.glob(self.meta, "part-*.parquet")
        if parts:
            t = storage.dataset(parts).to_table(columns=["shard"], filter=pads.field("status") == "ok")
            for row in t.group_by("shard").aggregate([("shard", "count")]).to_pylist():
                sizes[Path(row["shard"]).name] = row["shard_count"]
        sizes = dict(sorted(sizes.items()))
        atomic.write_bytes(self.sizes, json.dumps(sizes, indent=1).encode())
        return sizes

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def load_manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def save_manifest(self, manifest: dict) -> None:
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic.write_bytes(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=False).encode())


def versions() -> dict[str, str]:
    """Versions of what produced the data, for the manifest."""
    out = {"python": platform.python_version()}
    for dist in ("curate", "ray", "pyarrow", "img2dataset", "webdataset", "duckdb", "torch", "open_clip_torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
