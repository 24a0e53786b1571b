"""Zero-shot classification and image-text retrieval of an open_clip checkpoint on a labelled eval set.

An eval set is a folder of WebDataset tars plus `classes.json` with "classnames" and "templates"
(and optionally "attributes": more zero-shot tasks `{name, values, classnames, templates}`). Each
sample's .json carries "label_id" (index into classnames) or "label" (a class name), and a field per
attribute task. Why strict: an eval set without labels, or samples that cannot be scored, would
otherwise give a silently wrong accuracy; they raise, or are skipped and counted in the result.

Retrieval pairs image i with its own caption i; the rank of the true match is the number of
candidates scoring strictly higher, so identical embeddings give R@1 = 1.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from curate.train import checkpoints, configs
from curate.train.data import DataError, SkipCounter, decode_sample, expand_shards, raw_samples


class EvalError(ValueError):
    """An eval set or checkpoint that cannot give a trustworthy metric."""


def load_eval_meta(eval_dir: str | Path) -> dict:
    p = Path(eval_dir)
    if not p.is_dir():
        raise EvalError(f"eval set not found: {eval_dir}")
    cj = p / "classes.json"
    if not cj.is_file():
        raise EvalError(f"{eval_dir} has no classes.json (class names and prompt templates)")
    try:
        meta = json.loads(cj.read_text())
    except json.JSONDecodeError as err:
        raise EvalError(f"{cj} is not valid JSON: {err}") from None
    if not meta.get("classnames") or not meta.get("templates"):
        raise EvalError(f"{cj} needs non-empty 'classnames' and 'templates'")
    return meta


def read_eval_set(eval_dir: str | Path, preprocess, meta: dict) -> dict:
    """Images, captions, labels (and attribute values) of every usable sample; skips counted."""
    try:
        shards = expand_shards([str(eval_dir)])
    except DataError as err:
        raise EvalError(str(err)) from None
    handler = SkipCounter()
    skips: Counter = handler.counts
    names = {c: i for i, c in enumerate(meta["classnames"])}
    attrs = meta.get("attributes") or []
    images, texts, labels = [], [], []
    attr_vals: dict[str, list] = {a["name"]: [] for a in attrs}
    n_raw = 0
    for sample in raw_samples(shards, handler, split=False):
        n_raw += 1
        info = {}
        if "json" in sample:
            try:
                info = json.loads(sample["json"])
            except json.JSONDecodeError:
                info = {}
        label = info.get("label_id")
        if label is None and info.get("label") in names:
            label = names[info["label"]]
        if label is None or not (0 <= int(label) < len(names)):
            skips["missing_label"] += 1
            continue
        got = decode_sample(sample, preprocess, skips)
        if got is None:
            continue
        images.append(got[0])
        texts.append(got[1])
        labels.append(int(label))
        for a in attrs:
            v = info.get(a["name"])
            attr_vals[a["name"]].append(a["values"].index(v) if v in a["values"] else -1)
    if not images:
        if skips.get("missing_label") and skips["missing_label"] == n_raw:
            raise EvalError(f"no sample in {eval_dir} has a label ('label_id' or a 'label' from classes.json)")
        raise EvalError(f"no usable samples in {eval_dir} ({n_raw} read; skipped {dict(skips)})")
    return {"images": torch.stack(images), "texts": texts, "labels": torch.tensor(labels),
            "attrs": {k: torch.tensor(v) for k, v in attr_vals.items()}, "skipped": dict(skips), "read": n_raw}


def retrieval_metrics(img: torch.Tensor, txt: torch.Tensor, ks=(1, 5)) -> dict:
    """image->text and text->image R@k for normalised embeddings where row i of each is a pair."""
    sim = img @ txt.T
    diag = sim.diagonal().unsqueeze(1)
    rank_i2t = (sim > diag).sum(1)           # per image: captions scoring strictly above its own
    rank_t2i = (sim.T > diag).sum(1)         # per caption: images scoring strictly above its own
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((rank_i2t < k).float().mean())
        out[f"text_to_image_R@{k}"] = float((rank_t2i < k).float().mean())
    return out


def zero_shot_accuracy(img: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict:
    """top-k accuracy of argmax over class embeddings; rows with label < 0 are ignored."""
    keep = labels >= 0
    logits = img[keep] @ class_emb.T
    lab = labels[keep]
    out = {}
    for k in ks:
        if k > class_emb.shape[0]:
            continue
        top = logits.topk(k, dim=1).indices
        out[f"top{k}"] = float((top == lab.unsqueeze(1)).any(1).float().mean())
    return out


@torch.no_grad()
def class_embeddings(model, tokenizer, classnames, templates, device) -> torch.Tensor:
    """Mean of the normalised prompt embeddings per class, renormalised (CLIP's prompt ensembling)."""
    embs = []
    for c in classnames:
        tok = tokenizer([t.format(c) for t in templates]).to(device)
        e = torch.nn.functional.normalize(model.encode_text(tok).float(), dim=-1).mean(0)
        embs.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.stack(embs)


@torch.no_grad()
def evaluate(ckpt: str, eval_dir: str, model_name: str | None = None, batch_size: int = 256,
             device: str = "auto") -> dict:
    """All metrics for one checkpoint on one eval set."""
    import open_clip

    configs.register()
    meta = load_eval_meta(eval_dir)
    try:
        name = checkpoints.model_name_of(ckpt, model_name)
    except checkpoints.CheckpointError as err:
        raise EvalError(str(err)) from None
    if name not in open_clip.list_models():
        raise EvalError(f"unknown model {name!r}")
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(ckpt), device=dev)
    except Exception as err:  # noqa: BLE001 - wrong keys/shapes, empty dicts: all "not this model"
        msg = (str(err).splitlines() or [type(err).__name__])[0]
        raise EvalError(f"{ckpt} does not fit model {name}: {msg}") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    data = read_eval_set(eval_dir, preprocess, meta)
    img_parts, txt_parts = [], []
    for i in range(0, len(data["texts"]), batch_size):
        img_parts.append(model.encode_image(data["images"][i:i + batch_size].to(dev)).float())
        txt_parts.append(model.encode_text(tokenizer(data["texts"][i:i + batch_size]).to(dev)).float())
    img = torch.nn.functional.normalize(torch.cat(img_parts), dim=-1).cpu()
    txt = torch.nn.functional.normalize(torch.cat(txt_parts), dim=-1).cpu()

    cls = class_embeddings(model, tokenizer, meta["classnames"], meta["templates"], dev).cpu()
    zs = zero_shot_accuracy(img, cls, data["labels"])
    res = {"checkpoint": str(ckpt), "model": name, "eval_set": str(eval_dir), "samples": len(data["texts"]),
           "read": data["read"], "skipped": data["skipped"],
           "zeroshot_top1": zs["top1"], "zeroshot_top5": zs.get("top5"), "attributes": {}}
    res.update(retrieval_metrics(img, txt))
    for a in meta.get("attributes") or []:
        lab = data["attrs"][a["name"]]
        if int((lab >= 0).sum()) == 0:
            res["attributes"][a["name"]] = {"top1": None, "samples": 0}
            continue
        ce = class_embeddings(model, tokenizer, a["classnames"], a["templates"], dev).cpu()
        acc = zero_shot_accuracy(img, ce, lab, ks=(1,))
        res["attributes"][a["name"]] = {"top1": acc["top1"], "samples": int((lab >= 0).sum()),
                                        "chance": 1 / len(a["classnames"])}
    res["chance_top1"] = 1 / len(meta["classnames"])
    return res
