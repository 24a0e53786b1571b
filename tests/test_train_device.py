"""curate train's device choice: a bare `cuda` gets the rank's index (torch.cuda.set_device refuses one
without it; `--device cuda` crashed on an H200 before this). No GPU is needed: only torch.device values."""
from __future__ import annotations

import torch

from curate.train.loop import resolve_device


def test_bare_cuda_gets_the_local_rank():
    assert resolve_device("cuda", 0, True) == torch.device("cuda", 0)
    assert resolve_device("cuda", 3, True) == torch.device("cuda", 3)


def test_explicit_index_auto_and_cpu():
    assert resolve_device("cuda:1", 0, True) == torch.device("cuda", 1)
    assert resolve_device("auto", 2, True) == torch.device("cuda", 2)
    assert resolve_device("auto", 0, False) == torch.device("cpu")
    assert resolve_device("cpu", 0, True) == torch.device("cpu")
