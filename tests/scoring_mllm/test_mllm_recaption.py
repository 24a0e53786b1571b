"""mllm_score on the synthetic caption (CapFilt): text_col both asks once per caption, never for a missing one."""
from __future__ import annotations

import pyarrow as pa

from curate import schema
from curate.scorers.mllm import MllmScore

from .conftest import jpeg


def test_text_col_both_scores_each_caption_and_skips_missing_recaptions(chat_server):
    chat_server.scorer = lambda image, text: 0.9 if "synthetic" in text else 0.2
    n = 4
    t = pa.table({"uid": [f"u{i}" for i in range(n)], "text": [f"alt {i}" for i in range(n)],
                  "recaption": ["a synthetic caption", None, "synthetic too", None],
                  "image": [jpeg("red") for _ in range(n)], "status": ["ok"] * n})
    stage = MllmScore(backend="endpoint", model="tiny", base_url=chat_server.url, cache=False, text_col="both")
    assert set(stage.writes) == {"mllm_score", "recaption_mllm_score", "mllm_model"}
    assert stage.needs() == ("image", "recaption")
    out = stage.process(schema.conform(t, schema.run_schema({"image": pa.binary(), "recaption": pa.string(),
                                                             **stage.writes}))).to_pylist()
    assert [round(r["mllm_score"], 3) for r in out] == [0.2] * 4
    assert [r["recaption_mllm_score"] and round(r["recaption_mllm_score"], 3) for r in out] == [0.9, None, 0.9, None]
    assert chat_server.requests == 6  # 4 originals + 2 synthetic captions; none for a missing one
    only = MllmScore(backend="endpoint", model="tiny", base_url=chat_server.url, cache=False, text_col="recaption")
    assert set(only.writes) == {"recaption_mllm_score", "mllm_model"}
