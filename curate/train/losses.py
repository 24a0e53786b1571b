"""CLIP (softmax InfoNCE), SigLIP (pairwise sigmoid) and CoCa (contrastive + captioning) losses,
distributed-aware, from open_clip.

Why a wrapper: SigLIP needs a learnable bias. open_clip keeps it as `model.logit_bias`, which puts a
key into the model's state_dict that a plain `create_model_and_transforms(NAME)` model does not have,
so the checkpoint would no longer load back unchanged. Here the bias lives in the loss module and is
saved beside the model ("loss_state"), and the model stays a plain NAME model.
"""
from __future__ import annotations

import math

import torch
from open_clip.loss import ClipLoss, CoCaLoss, SigLipLoss

LOSSES = ("clip", "siglip", "coca")
# open_clip_train's CoCa defaults (--coca-caption-loss-weight 2, --coca-contrastive-loss-weight 1)
COCA_CAPTION_WEIGHT, COCA_CLIP_WEIGHT = 2.0, 1.0


class ContrastiveLoss(torch.nn.Module):
    def __init__(self, kind: str = "clip", rank: int = 0, world_size: int = 1):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {kind!r}")
        self.kind = kind
        if kind == "clip":
            self.fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)
        elif kind == "coca":
            self.fn = CoCaLoss(caption_loss_weight=COCA_CAPTION_WEIGHT, clip_loss_weight=COCA_CLIP_WEIGHT,
                               pad_id=0, gather_with_grad=True, rank=rank, world_size=world_size)
        else:
            self.fn = SigLipLoss(rank=rank, world_size=world_size)
            self.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))  # SigLIP paper init

    @staticmethod
    def init_logit_scale(kind: str) -> float:
        """SigLIP starts at t'=log(10), CLIP at log(1/0.07) (open_clip's default)."""
        return math.log(10.0) if kind == "siglip" else math.log(1 / 0.07)

    def from_output(self, out):
        """The loss of one model forward: a (image, text, scale, ...) tuple, or CoCa's output dict."""
        if isinstance(out, dict):
            if self.kind != "coca":
                raise ValueError("this model returns CoCa outputs: train it with loss 'coca'")
            clip, caption = self.fn(out["image_features"].float(), out["text_features"].float(),
                                    out["logits"].float(), out["labels"], out["logit_scale"].float())
            return clip + caption
        if self.kind == "coca":
            raise ValueError("loss 'coca' needs a CoCa model (one that returns captioning logits)")
        image_features, text_features, logit_scale = out[:3]
        return self(image_features.float(), text_features.float(), logit_scale.float())

    def forward(self, image_features, text_features, logit_scale):
        if self.kind == "clip":
            return self.fn(image_features, text_features, logit_scale)
        return self.fn(image_features, text_features, logit_scale, self.logit_bias)
