"""Which tar members a kept sample has, and what its caption members hold: the one place that decides it.

The shard writer writes exactly `sample_members(row, policy)`; `curate validate` checks a tar against
`text_members(row, policy)` and `caption_source(row, policy)` computed from the metadata row. Keeping both
in one module is why a new caption policy cannot make validate disagree with the writer.

What a sample's .txt holds when a `recaption` column exists (output.caption_policy in the recipe):
  original  - the original text only
  recaption - the synthetic caption, the original text where there is none
  both      - the original in .txt and the synthetic caption in .recap.txt (the default)
  fuse      - the LLM-merged caption (`fused_caption`, stage fuse_captions); the original where there is
              none, the synthetic caption where the original is empty too
The per-sample json always carries every caption column, so no policy loses information.
"""
from __future__ import annotations

import json
import math

from curate import schema

CAPTION_POLICIES = ("original", "recaption", "both", "fuse")
DEFAULT_POLICY = "both"
# extra text members under `both`: column -> member extension
EXTRA_TEXT_MEMBERS = {"recaption": "recap.txt"}
# columns that never go into the per-sample json (payload, bookkeeping that the tar name already says)
JSON_SKIP = schema.PAYLOAD_COLUMNS | schema.SIDECAR_COLUMNS | {"status", "stage", "reason", "error", "shard", "key", "part", "modality"}


def check_policy(caption_policy: str) -> None:
    if caption_policy not in CAPTION_POLICIES:
        raise ValueError(f"caption_policy must be one of {', '.join(CAPTION_POLICIES)}, not {caption_policy!r}")


def caption(row: dict, caption_policy: str = DEFAULT_POLICY) -> tuple[str, str]:
    """(the text of the sample's .txt, where it came from: original | recaption | fused)."""
    check_policy(caption_policy)
    text = row.get("text") or ""
    if caption_policy == "recaption" and row.get("recaption"):
        return row["recaption"], "recaption"
    if caption_policy == "fuse":
        if row.get("fused_caption"):
            return row["fused_caption"], "fused"
        if not text.strip() and row.get("recaption"):
            return row["recaption"], "recaption"
    if row.get("caption_kept") == "recaption":  # caption_select moved the passing synthetic caption into `text`
        return text, "recaption"
    return text, "original"


def caption_source(row: dict, caption_policy: str = DEFAULT_POLICY) -> str | None:
    """The json's `caption_source`, or None where the run has no synthetic caption column at all."""
    if "recaption" not in row and "fused_caption" not in row:
        return None
    return caption(row, caption_policy)[1]


def text_members(row: dict, caption_policy: str = DEFAULT_POLICY) -> dict[str, str]:
    """The text members of a kept sample, by extension: {"txt": ..., "recap.txt": ...} (the latter only under
    `both`, where a synthetic caption exists)."""
    out = {"txt": caption(row, caption_policy)[0]}
    if caption_policy == "both":
        for col, ext in EXTRA_TEXT_MEMBERS.items():
            if row.get(col) is not None:
                out[ext] = row[col]
    return out


def text_column(row: dict, ext: str, caption_policy: str = DEFAULT_POLICY) -> str:
    """The metadata column a text member (by extension) is copied from, to name it in a finding."""
    if ext == "txt":
        return {"original": "text", "recaption": "recaption", "fused": "fused_caption"}[caption(row, caption_policy)[1]]
    return {e: col for col, e in EXTRA_TEXT_MEMBERS.items()}[ext]


def _jsonable(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, bytes):
        return None
    return v


def sample_json(row: dict, caption_policy: str = DEFAULT_POLICY) -> dict:
    """The per-sample json: every metadata column but payloads and bookkeeping, plus caption_source."""
    info = {k: _jsonable(v) for k, v in row.items() if k not in JSON_SKIP}
    source = caption_source(row, caption_policy)
    if source is not None:
        info["caption_source"] = source
    return info


def sample_members(row: dict, caption_policy: str = DEFAULT_POLICY) -> list[tuple[str, bytes]]:
    """The tar members of one kept sample, in order: media, text members, json."""
    check_policy(caption_policy)
    key = row["key"]
    members = []
    if row.get("image") is not None:
        members.append((f"{key}.{row.get('image_format') or 'jpg'}", row["image"]))
    # interleaved documents: image j of the document as <key>.NNN.<ext> (the json's doc_images[j])
    infos = row.get("doc_images") or ()
    for j, data in enumerate(row.get("doc_image_bytes") or ()):
        if data is not None:
            members.append((f"{key}.{j:03d}.{(infos[j] or {}).get('format') or 'jpg'}", data))
    if row.get("video") is not None:
        members.append((f"{key}.{row.get('video_format') or 'mp4'}", row["video"]))
    for ext, text in text_members(row, caption_policy).items():
        members.append((f"{key}.{ext}", text.encode("utf-8")))
    members.append((f"{key}.json", json.dumps(sample_json(row, caption_policy), ensure_ascii=False,
                                              default=str).encode("utf-8")))
    return members
