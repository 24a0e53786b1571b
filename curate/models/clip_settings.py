"""The CLIP settings shared by stages that score with an open_clip model of the user's choice (`doc_clip`,
`keyframe_clip_score`): which model and weights, on which device, checked when the recipe loads.

One owner for them, so the refusal of random weights (curate.models.clip.check_weights) cannot be
forgotten by the next stage that loads a CLIP. A stage may redefine a setting's default and comment
(clip_score: no default model, a checkpoint is the filter CLIP) and name where a checkpoint comes from
(`checkpoint_hint`).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, model_validator


class ClipWeights(BaseModel):
    """Mixin for a Stage: `class MyStage(ClipWeights, Stage)`; `load_clip()` in its setup."""

    checkpoint_hint: ClassVar[str] = ""  # where a missing checkpoint comes from, for the refusal's message
    path_settings: ClassVar[tuple[str, ...]] = ("pretrained", "checkpoint")  # a weights file (not a hub tag)

    model: str | None = "ViT-B-32"  # open_clip name; needs pretrained or checkpoint too (or random_init: true)
    pretrained: str | None = None  # open_clip hub tag (openai, laion2b_s34b_b79k) or weights file/URL
    checkpoint: str | None = None  # open_clip checkpoint file or URL (e.g. from `curate train`)
    random_init: bool = False  # true: allow no pretrained/checkpoint (random weights, noise scores): for tests and demos only
    device: str = "auto"  # auto: cuda when visible, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # GPU autocast (auto: bf16 or fp16); CPU fp32

    @model_validator(mode="after")
    def _check_weights(self):
        """Fail at recipe load (one line, before any download) on an unknown model, a missing checkpoint, or
        no weights at all: random weights would make every score, and the decisions on it, noise."""
        from curate.models.clip import ModelLoadError, check_weights

        try:
            check_weights(self.name, self.model, self.pretrained, self.checkpoint, self.random_init,
                          checkpoint_hint=self.checkpoint_hint)
        except ModelLoadError as err:
            raise ValueError(str(err)) from None
        return self

    def weights_problem(self) -> str | None:
        """Why this stage's weights cannot be had on this machine (one line naming the fixes), None when
        they can. A run checks it before any work (curate/runner.py); recipe loading does not, as a recipe
        is valid whatever this machine's cache and network hold."""
        from curate.models.clip import hub_weights_problem

        if not self.model or self.checkpoint or not self.pretrained or self.model.startswith(("hf-hub:", "local-dir:")):
            return None
        why = hub_weights_problem(self.model, self.pretrained)
        if why is None:
            return None
        return (f"{self.name}: {why}; fetch them once where the network is reachable (python -c \"import open_clip; "
                f"open_clip.create_model_and_transforms('{self.model}', pretrained='{self.pretrained}')\"), set "
                f"{self.name}.pretrained to a weights file or {self.name}.checkpoint to a checkpoint, or for a test "
                f"run without weights --set {self.name}.model=curate-tiny --set {self.name}.pretrained=null "
                f"--set {self.name}.random_init=true")

    def load_clip(self):
        """The configured model (curate.models.clip.load_clip), after `weights_problem` once more: this runs in
        the worker, whose node's cache may lack weights the driver's preflight found (one line, not open_clip's
        ~45 s of hub retries and its error)."""
        from curate.models.clip import ModelLoadError, load_clip

        why = self.weights_problem()
        if why:
            raise ModelLoadError(why)
        return load_clip(self.model, self.pretrained, self.checkpoint, self.device, self.precision)
