"""Zero-shot classification and image-text retrieval of an open_clip checkpoint on a labelled eval set.

An eval set is a folder of WebDataset tars plus `classes.json` with "classnames" and "templates"
(and optionally "attributes": more zero-shot tasks `{name, values, classnames, templates}`). Each
sample's .json carries "label_id" (index into classnames) or "label" (a class name), and a field per
attribute task. Why strict: an eval set without labels, or samples that cannot be scored, would
otherwise give a silently wrong accuracy; they raise, or are skipped and counted in the result.

Retrieval pairs each image with its caption (the .txt) and, when the json has a "captions" list,
with every caption in it (any of them counts for image->text). Ties are averaged (the expected hit
under a uniform random tie-break), so constant embeddings score chance, not 1.0; non-finite
embeddings are an error. Every metric is reported with its chance: the majority-class baseline for
zero-shot tasks, the score of constant embeddings (k/N) for retrieval. With `per_example` the result
also holds one score per eval image and metric, which `curate experiment` bootstraps over.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch

from curate.io import storage
from curate.train import checkpoints, configs
from curate.train.data import DataError, SkipCounter, decode_sample, expand_shards, raw_samples


class EvalError(ValueError):
    """An eval set or checkpoint that cannot give a trustworthy metric."""


MAX_CAPTIONS = 32  # extra correct captions read per eval sample (json "captions"), a bound on one bad row
# Cosine similarities this close count as a tie (far below any difference a model means).
TIE_EPS = 1e-6


def load_eval_meta(eval_dir: str | Path) -> dict:
    p = storage.as_path(eval_dir)  # a local folder or a URL (s3://bucket/eval)
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


def read_eval_set(eval_dir: str | Path, preprocess, meta: dict, video_frames: int = 0) -> dict:
    """Images, captions, labels (and attribute values) of every usable sample; skips counted.

    With `video_frames` k > 0 each sample's picture is its video as a k-frame storyboard (video_data.py).
    """
    try:
        shards = expand_shards([str(eval_dir)])
    except DataError as err:
        raise EvalError(str(err)) from None
    handler = SkipCounter()
    skips: Counter = handler.counts
    names = {c: i for i, c in enumerate(meta["classnames"])}
    attrs = meta.get("attributes") or []
    images, texts, labels = [], [], []
    more: list[tuple[int, str]] = []  # (image index, another correct caption)
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
        got = decode_sample(sample, preprocess, skips, video_frames=video_frames)
        if got is None:
            continue
        images.append(got[0])
        texts.append(got[1])
        extra = info.get("captions") if isinstance(info.get("captions"), list) else []
        for c in extra[:MAX_CAPTIONS]:
            if isinstance(c, str) and c.strip() and c.strip() != got[1]:
                more.append((len(images) - 1, c.strip()))
        labels.append(int(label))
        for a in attrs:
            v = info.get(a["name"])
            attr_vals[a["name"]].append(a["values"].index(v) if v in a["values"] else -1)
    if not images:
        if skips.get("missing_label") and skips["missing_label"] == n_raw:
            raise EvalError(f"no sample in {eval_dir} has a label ('label_id' or a 'label' from classes.json)")
        raise EvalError(f"no usable samples in {eval_dir} ({n_raw} read; skipped {dict(skips)})")
    owner = list(range(len(texts))) + [i for i, _ in more]
    return {"images": torch.stack(images), "texts": texts, "labels": torch.tensor(labels),
            "captions": texts + [c for _, c in more], "owner": torch.tensor(owner),
            "attrs": {k: torch.tensor(v) for k, v in attr_vals.items()}, "skipped": dict(skips), "read": n_raw}


def _check_finite(x: torch.Tensor, what: str) -> None:
    """Why: NaN compares false with everything, so NaN embeddings used to rank every true match first."""
    bad = ~torch.isfinite(x).all(dim=-1) if x.ndim > 1 else ~torch.isfinite(x)
    if bool(bad.any()):
        raise EvalError(f"the model produced non-finite {what} ({int(bad.sum())} of {x.shape[0]} rows): "
                        "the checkpoint diverged or does not fit this model")


def _tied(sim: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(strictly above, tied with) `ref` per row; scores within TIE_EPS of it count as tied."""
    above = (sim > ref + TIE_EPS).sum(1)
    tied = ((sim - ref).abs() <= TIE_EPS).sum(1)
    return above, tied


def _hit_prob(above: torch.Tensor, tied_wrong: torch.Tensor, tied_right: torch.Tensor, k: int) -> torch.Tensor:
    """P(a correct item lands in the top k) when ties are broken uniformly at random.

    `above` wrong items score strictly higher than the best correct one; at that score `tied_wrong`
    wrong and `tied_right` (>= 1) correct items tie. With m = k - above free places, the first m of the
    tied group miss every correct item with probability C(tied_wrong, m) / C(tied_wrong + tied_right, m).
    """
    out = []
    for a, w, r in zip(above.tolist(), tied_wrong.tolist(), tied_right.tolist()):
        m = k - a
        if m <= 0:
            out.append(0.0)
        elif m >= w + 1:
            out.append(1.0)
        else:
            out.append(1.0 - math.comb(w, m) / math.comb(w + r, m))
    return torch.tensor(out, dtype=torch.float64)


def retrieval_scores(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor | None = None,
                     ks=(1, 5)) -> dict[str, torch.Tensor]:
    """Per image, the (expected) R@k hit of image->text and text->image retrieval.

    `owner[j]` is the image caption j describes (default: caption i belongs to image i); an image may
    have several captions. image->text: a hit when any of the image's captions is in the top k.
    text->image: each caption retrieves its image among all images; an image's score is the mean
    over its captions, so every metric has one value per image (what the bootstrap resamples).
    Ties are averaged: a true match tied with t others is in the top k with the probability a uniform
    random tie-break puts it there, so constant embeddings score chance (k/N), never 1.0.
    """
    _check_finite(img, "image embeddings")
    _check_finite(txt, "text embeddings")
    n, m = img.shape[0], txt.shape[0]
    owner = torch.arange(n) if owner is None else owner.long()
    if owner.shape[0] != m or (m and (int(owner.min()) < 0 or int(owner.max()) >= n)):
        raise EvalError("every caption must belong to one image of the eval set")
    if int(torch.bincount(owner, minlength=n).min()) == 0:
        raise EvalError("every eval image needs at least one caption")
    sim = (img.double() @ txt.double().T)                     # n x m
    right = owner.unsqueeze(0) == torch.arange(n).unsqueeze(1)  # n x m: caption j describes image i
    best = sim.masked_fill(~right, -math.inf).max(1, keepdim=True).values
    wrong_sim = sim.masked_fill(right, -math.inf)
    above_i, tied_w_i = _tied(wrong_sim, best)
    tied_r_i = ((sim - best).abs() <= TIE_EPS).logical_and(right).sum(1)
    own = sim.gather(0, owner.unsqueeze(0)).T                  # m x 1: each caption with its own image
    wrong_t = sim.T.masked_fill(right.T, -math.inf)            # m x n
    above_t, tied_w_t = _tied(wrong_t, own)
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = _hit_prob(above_i, tied_w_i, tied_r_i, k)
        per_caption = _hit_prob(above_t, tied_w_t, torch.ones_like(above_t), k)
        per_image = torch.zeros(n, dtype=torch.float64).index_add_(0, owner, per_caption)
        out[f"text_to_image_R@{k}"] = per_image / torch.bincount(owner, minlength=n)
    return out


def retrieval_metrics(img: torch.Tensor, txt: torch.Tensor, ks=(1, 5), owner: torch.Tensor | None = None) -> dict:
    """Mean image->text and text->image R@k (see retrieval_scores)."""
    return {k: float(v.mean()) for k, v in retrieval_scores(img, txt, owner, ks).items()}


def retrieval_chance(n_images: int, owner: torch.Tensor | None = None, ks=(1, 5)) -> dict:
    """R@k of a model that scores every pair the same: k/N for text->image, more for several captions."""
    m = n_images if owner is None else owner.shape[0]
    return retrieval_metrics(torch.ones(n_images, 1), torch.ones(m, 1), ks, owner)


def zero_shot_scores(img: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict:
    """Per labelled sample, the (expected, ties averaged) top-k hit; rows with label < 0 are dropped."""
    _check_finite(img, "image embeddings")
    _check_finite(class_emb, "class embeddings")
    keep = labels >= 0
    logits = img[keep].double() @ class_emb.double().T
    lab = labels[keep].long()
    true = logits.gather(1, lab.unsqueeze(1))
    above, tied = _tied(logits, true)
    out = {}
    for k in ks:
        if k > class_emb.shape[0]:
            continue
        out[f"top{k}"] = _hit_prob(above, tied - 1, torch.ones_like(above), k)
    return out


def zero_shot_accuracy(img: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict:
    """top-k accuracy over class embeddings (ties averaged); rows with label < 0 are ignored."""
    return {k: float(v.mean()) for k, v in zero_shot_scores(img, class_emb, labels, ks).items()}


def majority_baseline(labels: torch.Tensor, n_classes: int, ks=(1, 5)) -> dict:
    """top-k accuracy of always answering the k most frequent classes: the chance a metric must beat."""
    lab = labels[labels >= 0].long()
    if lab.numel() == 0:
        return {}
    freq = torch.bincount(lab, minlength=n_classes).sort(descending=True).values.double() / lab.numel()
    return {f"top{k}": float(freq[:k].sum()) for k in ks if k <= n_classes}


@torch.no_grad()
def class_embeddings(model, tokenizer, classnames, templates, device) -> torch.Tensor:
    """Mean of the normalised prompt embeddings per class, renormalised (CLIP's prompt ensembling)."""
    embs = []
    for c in classnames:
        tok = tokenizer([t.format(c) for t in templates]).to(device)
        e = torch.nn.functional.normalize(model.encode_text(tok).float(), dim=-1).mean(0)
        embs.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.stack(embs)


@storage.fetch_session()  # one per evaluation (or the experiment's): see storage.session_copy
@torch.no_grad()
def evaluate(ckpt: str, eval_dir: str, model_name: str | None = None, batch_size: int = 256,
             device: str = "auto", per_example: bool = False, video_frames: int | None = None) -> dict:
    """All metrics for one checkpoint on one eval set, each with its chance level.

    `per_example` adds "per_example": {metric: [one score per eval image]} (zero-shot hits, expected
    retrieval hits), in eval-set order, so two runs on the same eval set can be compared example by example.
    `video_frames` (default: what the checkpoint was trained with, else 0) scores a video eval set's clips
    as storyboards (video_data.py).
    """
    import open_clip

    configs.register()
    meta = load_eval_meta(eval_dir)
    try:
        local = checkpoints.local_copy(ckpt)  # a checkpoint on s3:// etc. is fetched into the machine's cache
        name = checkpoints.model_name_of(local, model_name)
        if model_name and name != model_name:  # the checkpoint records another model: its own name won
            raise EvalError(f"--model {model_name} differs from the model {name} recorded in {ckpt}: leave --model "
                            "out (it names the model of a checkpoint that does not record one)")
    except checkpoints.CheckpointError as err:
        raise EvalError(str(err)) from None
    if name not in open_clip.list_models():
        raise EvalError(f"unknown model {name!r}")
    if video_frames is None:
        video_frames = int((checkpoints.load(ckpt, mmap=True).get("config") or {}).get("video_frames") or 0)
    if video_frames:
        from curate.train.video_data import require_decoder

        try:
            require_decoder("curate eval")
        except ValueError as err:
            raise EvalError(str(err)) from None
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(local), device=dev)
    except Exception as err:  # noqa: BLE001 - wrong keys/shapes, empty dicts: all "not this model"
        msg = (str(err).splitlines() or [type(err).__name__])[0]
        raise EvalError(f"{ckpt} does not fit model {name}: {msg}") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    data = read_eval_set(eval_dir, preprocess, meta, video_frames)
    img_parts, txt_parts = [], []
    for i in range(0, len(data["texts"]), batch_size):
        img_parts.append(model.encode_image(data["images"][i:i + batch_size].to(dev)).float())
    for i in range(0, len(data["captions"]), batch_size):
        txt_parts.append(model.encode_text(tokenizer(data["captions"][i:i + batch_size]).to(dev)).float())
    img = torch.nn.functional.normalize(torch.cat(img_parts), dim=-1).cpu()
    txt = torch.nn.functional.normalize(torch.cat(txt_parts), dim=-1).cpu()
    _check_finite(img, "image embeddings")  # before the normalised NaN is mistaken for anything

    n = len(data["texts"])
    cls = class_embeddings(model, tokenizer, meta["classnames"], meta["templates"], dev).cpu()
    scores = {f"zeroshot_{k}": v for k, v in zero_shot_scores(img, cls, data["labels"]).items()}
    scores.update(retrieval_scores(img, txt, data["owner"]))
    res = {"checkpoint": str(ckpt), "model": name, "eval_set": str(eval_dir), "samples": n, "video_frames": video_frames,
           "captions": len(data["captions"]), "read": data["read"], "skipped": data["skipped"],
           "zeroshot_top1": None, "zeroshot_top5": None, "attributes": {}}
    res.update({k: float(v.mean()) for k, v in scores.items()})
    base = majority_baseline(data["labels"], len(meta["classnames"]))
    res["chance"] = {f"zeroshot_{k}": v for k, v in base.items()}
    res["chance"].update(retrieval_chance(n, data["owner"]))
    res["chance_top1"] = res["chance"]["zeroshot_top1"]
    for a in meta.get("attributes") or []:
        lab = data["attrs"][a["name"]]
        if int((lab >= 0).sum()) == 0:
            res["attributes"][a["name"]] = {"top1": None, "samples": 0}
            continue
        ce = class_embeddings(model, tokenizer, a["classnames"], a["templates"], dev).cpu()
        hits = zero_shot_scores(img, ce, lab, ks=(1,))["top1"]
        res["attributes"][a["name"]] = {"top1": float(hits.mean()), "samples": int((lab >= 0).sum()),
                                        "chance": majority_baseline(lab, len(a["classnames"]), ks=(1,))["top1"],
                                        "uniform_chance": 1 / len(a["classnames"])}
        full = torch.full((n,), float("nan"), dtype=torch.float64)
        full[lab >= 0] = hits
        scores[f"attribute_{a['name']}"] = full
    if per_example:
        res["per_example"] = {k: [None if math.isnan(x) else round(x, 6) for x in v.tolist()]
                              for k, v in scores.items()}
    return res
