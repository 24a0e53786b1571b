"""Use the NoWatermark filter from Python: build a curate.Pipeline from stage objects and run it.

    PYTHONPATH=examples/custom_stage python examples/custom_stage/run_pipeline.py WORK [INPUT.parquet]

Without INPUT it writes a tiny corpus of its own to WORK/input.parquet (8 generated images, 3 with
stock-photo captions). The run directory is WORK/python-run. Prints the run's counts (kept, and
dropped/failed by stage/reason) as one JSON line.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import curate
from curate.download.load_image import LoadImage
from curate_watermark.filters import NoWatermark

CAPTIONS = ["a red circle on a white background", "Red circle stock photo - Alamy",
            "two blue squares side by side", "Image 1234 by Shutterstock: green triangle",
            "a yellow star in the corner", "(c) 2024 All Rights Reserved, purple ring",
            "three small orange dots", "a black line across grey"]


def tiny_corpus(path: Path) -> Path:
    """A Parquet input whose rows carry their images (no download needed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    images = []
    for i in range(len(CAPTIONS)):
        buf = io.BytesIO()
        Image.new("RGB", (32 + i, 32), (30 * i, 200 - 20 * i, 90)).save(buf, "PNG")
        images.append(buf.getvalue())
    pq.write_table(pa.table({"image": images, "caption": CAPTIONS}), path)
    return path


def main(work: str, input_path: str | None = None) -> curate.RunDir:
    Path(work).mkdir(parents=True, exist_ok=True)
    if input_path is None:
        input_path = str(tiny_corpus(Path(work) / "input.parquet"))
    pipeline = curate.Pipeline(
        [LoadImage(), NoWatermark(markers=("shutterstock", "stock photo", "alamy", "all rights reserved"))],
        name="watermark-example", input={"text_col": "caption"}, output={"samples_per_shard": 1000})
    run = pipeline.run(input_path, Path(work) / "python-run")
    print(json.dumps(run.load_manifest()["counts"], sort_keys=True))
    return run


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(*sys.argv[1:])
