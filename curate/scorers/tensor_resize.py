"""A model's PIL resize and crop redone as torch ops on uint8 pixels (`clip_score` with `resize: torch`).

Why: on the host of a GPU scorer the resize is most of the per-image work. PIL's antialiased bicubic
resize of a 256 px JPEG to ViT-B-32's 224 px takes ~1.0 ms on one core, torch's ~0.26 ms (uint8, one
thread, bench/RESULTS.md gpu-host-decode); the decode is ~0.33 ms. So with the same cores the decode
workers feed about twice the images. It is not PIL's arithmetic: pixels differ from PIL's by at most a
few levels (tests/scoring/test_tensor_resize.py measures it: at most 2), so scores move slightly (at most
7e-5 on the models tried, docs/gpu.md) and the default stays `resize: pil`, open_clip's own transform.

Only the steps whose geometry torchvision defines the same for tensors as for PIL images are redone:
`Resize` and `CenterCrop` (same output size and crop offsets; torchvision's v2 functions, whose uint8
antialiased kernels were ported from Pillow-SIMD: v1's float path is slower than PIL and further from
it), and the RGB conversions, which are no-ops here because the decoder already gives RGB. A preprocess with any other step (open_clip's
`ResizeKeepRatio`, `CenterCropOrPad`, a custom transform) gets None and keeps PIL.
"""
from __future__ import annotations

import numpy as np

_RGB_STEPS = ("MaybeConvertMode", "_convert_to_rgb")


class TensorResize:
    """Callable: a PIL RGB image (or an (H, W, 3) uint8 array) -> (h, w, 3) uint8 array, through `steps`.

    A class, not a closure, so a spawned decode process can receive it."""

    def __init__(self, steps: list):
        self.steps = steps

    def __call__(self, image) -> np.ndarray:
        import torch
        from torchvision.transforms import Resize
        from torchvision.transforms.v2 import functional as F

        x = torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1)  # CHW over HWC memory (channels last)
        for step in self.steps:
            if isinstance(step, Resize):  # v2's uint8 kernel: ~4x PIL's speed, within a few levels of it
                x = F.resize(x, step.size, step.interpolation, step.max_size, step.antialias)
            else:
                x = F.center_crop(x, step.size)
        return x.permute(1, 2, 0).contiguous().numpy()

    def __repr__(self) -> str:
        return f"TensorResize({self.steps})"


def tensor_part(pil_part) -> TensorResize | None:
    """`pil_part` (the host half of `clip_score.split_preprocess`) as torch ops, or None when a step has no
    tensor equivalent with the same geometry."""
    from torchvision.transforms import CenterCrop, Resize

    steps = []
    for step in getattr(pil_part, "transforms", ()):
        if type(step) in (Resize, CenterCrop):
            steps.append(step)
        elif type(step).__name__ not in _RGB_STEPS and getattr(step, "__name__", "") not in _RGB_STEPS:
            return None
    return TensorResize(steps) if steps else None
