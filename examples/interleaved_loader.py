"""Read curate's interleaved shards back as (texts, images) in reading order, OBELICS-style.

Shard layout (one WebDataset sample per document): `<key>.json` holds the document row, whose `segments`
list the content in order ({"type": "text", "text"} or {"type": "image", "image": j}); image j of the
document is the member `<key>.NNN.<ext>` (NNN = j, zero-padded to three digits, ext from
doc_images[j].format). Images that failed or were dropped have no member and are skipped here.

    python examples/interleaved_loader.py demo-interleaved/shards/000000.tar

`order="placement"` uses mmc4's placement instead of the page order: the document's sentences, each kept
image inserted after the sentence `doc_clip` assigned it to (image_sentence).
"""
from __future__ import annotations

import io
import json
import sys
from typing import Iterator

from PIL import Image


def document_items(sample: dict, order: str = "document") -> tuple[list, list]:
    """(texts, images) of one decoded WebDataset sample: aligned lists, exactly one of each pair set."""
    doc = json.loads(sample["json"]) if isinstance(sample["json"], (bytes, str)) else sample["json"]
    infos = doc.get("doc_images") or []

    def image(j: int):
        ext = (infos[j] or {}).get("format") or "jpg"
        data = sample.get(f"{j:03d}.{ext}")
        if data is None:
            return None
        return data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data)).convert("RGB")

    texts, images = [], []
    if order == "placement" and doc.get("sentences") is not None:
        after: dict[int, list[int]] = {}
        for j, s in enumerate(doc.get("image_sentence") or []):
            if s is not None:
                after.setdefault(s, []).append(j)
        for s, sentence in enumerate(doc["sentences"]):
            texts.append(sentence), images.append(None)
            for j in after.get(s, []):
                im = image(j)
                if im is not None:
                    texts.append(None), images.append(im)
        return texts, images
    for seg in doc.get("segments") or []:
        if seg["type"] == "text":
            texts.append(seg["text"]), images.append(None)
        else:
            im = image(seg["image"])
            if im is not None:
                texts.append(None), images.append(im)
    return texts, images


def iter_documents(shards, order: str = "document") -> Iterator[tuple[list, list]]:
    """Yield (texts, images) per document from WebDataset shards (paths, globs or brace ranges)."""
    import webdataset as wds

    for sample in wds.WebDataset(shards, shardshuffle=False):
        yield document_items(sample, order)


if __name__ == "__main__":
    for n, (texts, images) in enumerate(iter_documents(sys.argv[1:] or ["demo-interleaved/shards/000000.tar"])):
        parts = ["[image %dx%d]" % im.size if im is not None else (t[:60] + "...") for t, im in zip(texts, images)]
        print(f"document {n}: " + " | ".join(parts))
        if n >= 4:
            break
