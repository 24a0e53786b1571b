"""CLIP (softmax InfoNCE) and SigLIP (pairwise sigmoid) losses, distributed-aware, from open_clip.

Why a wrapper: SigLIP needs a learnable bias. open_clip keeps it as `model.logit_bias`, which puts a
key into the model's state_dict that a plain `create_model_and_transforms(NAME)` model does not have,
so the checkpoint would no longer load back unchanged. Here the bias lives in the loss module and is
saved beside the model ("loss_state"), and the model stays a plain NAME model.
"""
from __future__ import annotations

import math

import torch
from open_clip.loss import ClipLoss, SigLipLoss

LOSSES = ("clip", "siglip")


class ContrastiveLoss(torch.nn.Module):
    def __init__(self, kind: str = "clip", rank: int = 0, world_size: int = 1):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {kind!r}")
        self.kind = kind
        if kind == "clip":
            self.fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)
        else:
            self.fn = SigLipLoss(rank=rank, world_size=world_size)
            self.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))  # SigLIP paper init

    @staticmethod
    def init_logit_scale(kind: str) -> float:
        """SigLIP starts at t'=log(10), CLIP at log(1/0.07) (open_clip's default)."""
        return math.log(10.0) if kind == "siglip" else math.log(1 / 0.07)

    def forward(self, image_features, text_features, logit_scale):
        if self.kind == "clip":
            return self.fn(image_features, text_features, logit_scale)
        return self.fn(image_features, text_features, logit_scale, self.logit_bias)
