"""`curate train --loss coca`: a tiny CoCa trains (contrastive + captioning loss) and its checkpoint captions."""
from __future__ import annotations

import math

import pytest

from curate.train.loop import TrainConfig, TrainError, train
from tests.train.conftest import write_colour_shards


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    root = tmp_path_factory.mktemp("cocacolour")
    write_colour_shards(root, 128, 2)
    return root


def test_tiny_coca_trains_and_recaptions(tmp_path, colour):
    from curate.caption.recaption import Recaption

    from .conftest import image_table

    s = train(TrainConfig(shards=[str(colour)], output=str(tmp_path / "coca"), model="curate-tiny-coca", loss="coca",
                          samples_seen=64, batch_size=8, lr=2e-3, warmup=2, log_every=2, threads=1))
    # 8 steps of 8: a step's cost is mostly the captioning head's logits over the 49k-token vocabulary
    assert s["steps"] == 8 and math.isfinite(s["final_loss"]) and s["final_loss"] < s["first_loss"]
    out = Recaption(backend="coca", checkpoint=s["checkpoint"], max_tokens=8, on_truncated="keep").process(
        image_table(["x", "y"]))
    assert all(out.column("recaption").to_pylist())


@pytest.mark.parametrize("model, loss", [("curate-tiny", "coca"), ("curate-tiny-coca", "clip")])
def test_coca_loss_goes_with_coca_models_only(tmp_path, colour, model, loss):
    with pytest.raises(TrainError, match="--loss coca goes with a CoCa model"):
        train(TrainConfig(shards=[str(colour)], output=str(tmp_path / "x"), model=model, loss=loss, samples_seen=32))
