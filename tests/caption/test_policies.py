"""Caption policies at shard time, read back with webdataset, and the training mix knob (--recaption-prob)."""
from __future__ import annotations

import io
import json
import random
from collections import Counter

import pytest
import torch
import webdataset as wds
from PIL import Image

from curate.io.shard_writer import write_tar
from curate.recipe import RecipeError, build_recipe

from .conftest import jpg


def _rows(n=6):
    return [{"key": f"k{i}", "image": jpg((200, 20 * i, 0), seed=i), "text": f"original {i}", "uid": f"k{i}",
             "recaption": (f"synthetic {i}" if i % 3 else None), "recaption_model": "m"} for i in range(n)]


def _read(path):
    return {s["__key__"]: s for s in wds.WebDataset(str(path), shardshuffle=False)}


@pytest.mark.parametrize("policy", ["original", "recaption", "both"])
def test_policy_members(tmp_path, policy):
    path = tmp_path / f"{policy}.tar"
    write_tar(path, _rows(), caption_policy=policy)
    got = _read(path)
    assert len(got) == 6
    for i in range(6):
        s = got[f"k{i}"]
        has = i % 3 != 0
        meta = json.loads(s["json"])
        # the json always carries both captions, so no policy loses the other one
        assert meta["text"] == f"original {i}" and meta["recaption"] == (f"synthetic {i}" if has else None)
        txt = s["txt"].decode()
        if policy == "original":
            assert txt == f"original {i}" and "recap.txt" not in s
        elif policy == "recaption":
            assert txt == (f"synthetic {i}" if has else f"original {i}") and "recap.txt" not in s
            assert meta["caption_source"] == ("recaption" if has else "original")
        else:
            assert txt == f"original {i}"
            assert (s["recap.txt"].decode() == f"synthetic {i}") if has else ("recap.txt" not in s)
        Image.open(io.BytesIO(s["jpg"])).verify()


def test_unknown_policy_is_a_recipe_error():
    with pytest.raises(RecipeError, match="output.caption_policy"):
        build_recipe({"name": "t", "input": {"path": "x"}, "output": {"path": "o", "caption_policy": "fuse2"},
                      "stages": [{"caption_text": {}}]})


def test_decode_sample_recaption_prob_is_seeded_and_falls_back():
    from curate.train.data import decode_sample

    with_recap = {"jpg": jpg((1, 2, 3)), "txt": b"orig", "recap.txt": b"recap"}
    without = {"jpg": jpg((1, 2, 3)), "txt": b"orig"}
    pick = lambda p, seed, s=with_recap: [decode_sample(s, lambda im: 0, Counter(), p, r)[1]  # noqa: E731
                                          for r in [random.Random(seed)] for _ in range(400)]
    assert set(pick(0.0, 1)) == {"orig"}
    assert set(pick(1.0, 1)) == {"recap"}
    assert set(pick(1.0, 1, without)) == {"orig"}  # no synthetic caption: the original is used
    mixed = pick(0.3, 1)
    assert mixed == pick(0.3, 1) and mixed != pick(0.3, 2)
    assert 0.22 < mixed.count("recap") / 400 < 0.38


def test_train_batches_mix(tmp_path):
    """TrainBatches with --recaption-prob over a real shard: same seed, same captions; the rate follows p."""
    from curate.train.data import TrainBatches

    rows = [{"key": f"k{i}", "image": jpg((i, 0, 0), size=(16, 16)), "text": "orig", "recaption": "recap", "uid": "u"}
            for i in range(200)]
    write_tar(tmp_path / "000000.tar", rows)

    def texts(p, seed):
        ds = TrainBatches([str(tmp_path / "000000.tar")], lambda im: torch.zeros(1), list, batch_size=200, seed=seed,
                          shuffle_buffer=1, recaption_prob=p)
        return next(iter(ds))[1]

    a = texts(0.5, 0)
    assert a == texts(0.5, 0) and 60 < a.count("recap") < 140
    assert texts(0.0, 0).count("recap") == 0 and texts(1.0, 0).count("recap") == 200
