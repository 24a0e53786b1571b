"""pipelines/video_text_recaption.yaml through the real runner: clips captioned from their keyframes by the
tiny CoCa the recaption tests build (randomly initialised, never downloaded), written beside the original
text into the shards exactly as for images."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from curate.caption.backends import Caption
from curate.caption.recaption import Recaption, choose
from curate.demo.video import write_url_list
from curate.recipe import load_recipe
from curate.runner import Runner
from curate.video import split, synth
from tests.caption.conftest import coca_ckpt  # noqa: F401 - the session fixture, shared with tests/caption


def test_video_recipe_recaptions_clips_from_keyframes(tmp_path, video_corpus, video_server, coca_ckpt,  # noqa: F811
                                                      ray_address):
    urls = write_url_list(video_corpus, video_server.url, tmp_path / "urls.parquet")
    out = tmp_path / "run"
    recipe = load_recipe("video_text_recaption", [f"recaption.checkpoint={coca_ckpt}", "recaption.max_tokens=6",
                                                  "recaption.on_truncated=keep",
                                                  "download_video.subtitles_col=subtitles"],
                         input_path=str(urls), output_path=str(out))
    Runner(recipe).start()
    meta = pq.ParquetDataset(str(out / "meta")).read().to_pylist()
    videos = [r for r in meta if r["parent_uid"] is None]
    clips = [r for r in meta if r["parent_uid"] is not None]
    assert len(videos) == pq.read_table(urls).num_rows  # counts in == counts out: every video has its row
    assert all(r["status"] != "ok" and r["reason"] for r in videos)
    assert {c["parent_uid"] for c in clips} == {r["uid"] for r in videos if r["reason"] == "split_into_clips"}
    kept = [c for c in clips if c["status"] == "ok"]
    assert kept and len(kept) == sum(json.loads((out / "sizes.json").read_text()).values())
    assert all(c["recaption"] and c["recaption_model"].startswith("coca:curate-tiny-coca") for c in kept)
    samples = {s["__key__"]: s for shard in sorted((out / "shards").glob("*.tar"))
               for s in wds.WebDataset(str(shard), shardshuffle=False)}
    assert set(samples) == {c["key"] for c in kept}
    for c in kept:  # caption_policy both: original in .txt, synthetic in .recap.txt, both in the json
        s = samples[c["key"]]
        assert s["txt"].decode() == c["text"] and s["recap.txt"].decode() == c["recaption"]
        j = json.loads(s["json"])
        assert j["recaption"] == c["recaption"] and j["start"] == c["start"] and "mp4" in s


def test_keyframe_choice_middle_and_consensus(coca_ckpt):  # noqa: F811
    """`middle` captions the middle keyframe; `all` captions each and keeps the one the others agree with."""
    video = synth.scenes_video([synth.Scene("square", "red", "right", "black", 2.0)], fps=10, size=64, seed=1)
    sc = split.scan(video, sample_every_s=0.25, keyframe_size=64)
    kf = split.describe(sc, (0.0, 2.0), 3).keyframes
    n = 3
    t = pa.table({"uid": [f"c{i}" for i in range(n)], "part": pa.array([0] * n, pa.int32()), "text": ["x"] * n,
                  "keyframes": pa.array([kf, kf[:1], []], pa.list_(pa.binary())), "status": ["ok"] * n,
                  "stage": pa.nulls(n, pa.string()), "reason": pa.nulls(n, pa.string()),
                  "error": pa.nulls(n, pa.string())})
    single = Recaption(source="keyframes", checkpoint=str(coca_ckpt), max_tokens=5, on_truncated="keep")
    assert single.needs() == ("keyframes", "text")
    got = single.process(t).to_pylist()
    # the middle keyframe alone gives the same caption as a clip whose only keyframe it is
    alone = Recaption(source="keyframes", checkpoint=str(coca_ckpt), max_tokens=5, on_truncated="keep").process(
        t.set_column(t.column_names.index("keyframes"), "keyframes",
                     pa.array([kf[1:2], kf[1:2], []], pa.list_(pa.binary())))).to_pylist()
    assert got[0]["recaption"] and got[0]["recaption"] == alone[0]["recaption"]
    assert got[2]["recaption"] is None and got[2]["recaption_flag"] == "no_keyframes" and got[2]["status"] == "ok"
    every = Recaption(source="keyframes", keyframes="all", checkpoint=str(coca_ckpt), max_tokens=5,
                      on_truncated="keep").process(t).to_pylist()
    assert every[0]["recaption"] and every[1]["recaption"] == got[1]["recaption"]
    # the consensus rule itself: the odd one out loses, ties go to the middle, empty generations lose
    c = [Caption("a red square moving right", 5, False), Caption("black", 1, False),
         Caption("a red square moves right", 5, False)]
    assert choose(c).text.startswith("a red square")
    assert choose([Caption("a", 1, False), Caption("b", 1, False), Caption("c", 1, False)]).text == "b"
    assert choose([Caption("", 0, False), Caption("", 0, False), Caption("a dog", 2, False)]).text == "a dog"


def test_image_recipe_rejects_keyframes_source_without_clip_split():
    from curate.recipe import RecipeError

    with pytest.raises(RecipeError, match="needs column 'keyframes'"):
        load_recipe("image_text_recaption", ["recaption.source=keyframes", "recaption.check_model=false"],
                    input_path="x.parquet", output_path="o")
