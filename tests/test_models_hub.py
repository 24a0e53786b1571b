"""The transformers-model preflight (curate/models/hub.py): a local folder must hold a loadable model, a hub id
must be in the local Hugging Face cache or, when not offline, be served by the hub, found out before any
work and in one line. Nothing here downloads from the internet: the models are tiny, randomly initialised
and saved to folders; the "hub" is tests/fake_hub.py on loopback, and the cache is filled from it by
huggingface_hub itself (`huggingface-cli download`), in its own layout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.models import hub as mhub
from curate.models.hub import transformers_model_problem
from tests.fake_hub import FakeHub

NOBODY = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture(scope="module")
def blip(tmp_path_factory) -> Path:
    from curate.caption.tiny import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("hubblip") / "tiny-blip")


@pytest.fixture(scope="module")
def fake_hub(blip):
    with FakeHub({"tiny/blip": blip, "tiny/gated": blip}, gated=("tiny/gated",)) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_hub_sessions():
    """huggingface_hub keeps one requests session per thread, made offline or online by HF_HUB_OFFLINE as it
    was when the session was made: after a test that went online, a later offline test's from_pretrained
    (transformers asks the hub for custom generation code) went to the network and spent ~18 s in
    http_backoff's retries. Each test starts and ends with new sessions (see _hub / _use)."""
    from huggingface_hub.utils import reset_sessions

    reset_sessions()
    yield
    reset_sessions()


def _hub(monkeypatch, tmp_path, offline: bool, endpoint: str | None = NOBODY) -> Path:
    """This test's Hugging Face cache (empty until filled), HF_HUB_OFFLINE and HF_ENDPOINT (None: as it
    is), for huggingface_hub and for transformers' from_pretrained (which read them when imported)."""
    import transformers.utils.hub as thub
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if endpoint is not None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(thub, "TRANSFORMERS_CACHE", str(cache))
    _new_sessions()
    return cache


def _new_sessions() -> None:
    """Sessions that follow the HF_HUB_OFFLINE just set (see _fresh_hub_sessions)."""
    from huggingface_hub.utils import reset_sessions

    reset_sessions()


def download(fake_hub, cache: Path, *files: str) -> Path:
    """`huggingface-cli download tiny/blip [FILES]` from the loopback hub into `cache`, as docs/recaptioning.md
    shows it (huggingface_hub writes its own layout); a subprocess, since huggingface_hub reads HF_ENDPOINT
    when imported."""
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0"}
    cli = Path(sys.executable).with_name("huggingface-cli")
    done = subprocess.run([str(cli), "download", "tiny/blip", *files], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return cache


@pytest.fixture(scope="module")
def filled(fake_hub, tmp_path_factory) -> Path:
    return download(fake_hub, tmp_path_factory.mktemp("hf") / "cache")


def _use(monkeypatch, cache: Path) -> None:
    """Read `cache` offline (as _hub, on a cache filled elsewhere)."""
    import transformers.utils.hub as thub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(thub, "TRANSFORMERS_CACHE", str(cache))
    _new_sessions()


def test_local_folder_must_hold_a_loadable_model(blip, tmp_path):
    assert transformers_model_problem("recaption", str(blip)) is None
    assert "model folder /no/such/vlm does not exist" in transformers_model_problem("recaption", "/no/such/vlm")
    bare = tmp_path / "bare"
    shutil.copytree(blip, bare)
    (bare / "model.safetensors").unlink()
    why = transformers_model_problem("mllm_score", str(bare))
    assert why.startswith(f"mllm_score: model folder {bare} has no weights (model.safetensors or")
    assert "set mllm_score.model to a folder saved with save_pretrained" in why and "\n" not in why
    (bare / "config.json").write_text('{"model_type": "no-such-architecture"}')
    shutil.copy2(blip / "model.safetensors", bare)
    assert "holds a config transformers cannot load" in transformers_model_problem("recaption", str(bare))
    (bare / "config.json").unlink()
    assert "has no config.json" in transformers_model_problem("recaption", str(bare))
    sharded = tmp_path / "sharded"  # an index names its shards: one missing is found before loading
    shutil.copytree(blip, sharded)
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert "model-00002-of-00002.safetensors (one of 2 weight shards)" in transformers_model_problem("r", str(sharded))


def test_a_name_that_is_no_hub_id_is_refused_without_a_lookup():
    why = transformers_model_problem("recaption", "no such model!")
    assert why == "recaption: model 'no such model!' is neither a folder nor a Hugging Face hub id (org/name)"


def test_offline_hub_id_not_in_the_cache_is_refused_without_a_request(monkeypatch, tmp_path):
    cache = _hub(monkeypatch, tmp_path, offline=True)
    monkeypatch.setattr(mhub, "_hub_problem", lambda *a: pytest.fail("a request while HF_HUB_OFFLINE is set"))
    why = transformers_model_problem("recaption", "Salesforce/blip-image-captioning-base")
    assert why == (f"recaption: transformers model Salesforce/blip-image-captioning-base: the local Hugging Face "
                   f"cache ({cache}) lacks its config.json and HF_HUB_OFFLINE is set; fetch it once where the "
                   "network is reachable (huggingface-cli download Salesforce/blip-image-captioning-base, with "
                   "the same HF_HUB_CACHE) or set recaption.model to a local folder")
    assert "--revision v2.0" in transformers_model_problem("recaption", "Salesforce/blip", revision="v2.0")


def test_hub_id_in_the_cache_passes_offline_at_its_revision_only(monkeypatch, fake_hub, filled):
    _use(monkeypatch, filled)
    assert transformers_model_problem("recaption", "tiny/blip") is None
    assert transformers_model_problem("recaption", "tiny/blip", revision="main") is None
    assert transformers_model_problem("recaption", "tiny/blip", revision=fake_hub.sha["tiny/blip"]) is None
    why = transformers_model_problem("recaption", "tiny/blip", revision="v2")  # another revision: not cached
    assert "lacks its config.json" in why and "huggingface-cli download tiny/blip --revision v2" in why


def test_a_cache_holding_only_the_config_is_not_enough(monkeypatch, tmp_path, fake_hub):
    """What loading the config alone leaves in the cache (recaption's recipe-time check did that): the
    weights are still missing, and the run is refused, not the first worker."""
    _use(monkeypatch, download(fake_hub, tmp_path / "cache", "config.json"))
    why = transformers_model_problem("recaption", "tiny/blip")
    assert "lacks its weights (model.safetensors or pytorch_model.bin" in why and "HF_HUB_OFFLINE is set" in why


def test_online_one_request_says_whether_the_hub_serves_the_model(monkeypatch, tmp_path, fake_hub):
    _hub(monkeypatch, tmp_path, offline=False, endpoint=fake_hub.url)
    fake_hub.requests.clear()
    assert transformers_model_problem("recaption", "tiny/blip") is None  # not cached, served: from_pretrained fetches
    assert fake_hub.requests == ["GET /api/models/tiny/blip"]  # one request, no retries
    why = transformers_model_problem("recaption", "tiny/none")
    assert why.startswith(f"recaption: transformers model tiny/none is not on {fake_hub.url} (or is private: set "
                          "HF_TOKEN)")
    assert "huggingface-cli download tiny/none) and run with HF_HUB_OFFLINE=1" in why
    why = transformers_model_problem("recaption", "tiny/blip", revision="v9")
    assert f"has no revision v9 on {fake_hub.url}" in why
    fake_hub.requests.clear()  # a gated repo's info is public, its files are not: asked too
    why = transformers_model_problem("recaption", "tiny/gated")
    assert f"tiny/gated is gated on {fake_hub.url}: accept its terms there and set HF_TOKEN" in why
    assert fake_hub.requests == ["GET /api/models/tiny/gated", "GET /api/models/tiny/gated/auth-check"]
    _hub(monkeypatch, tmp_path, offline=False, endpoint=NOBODY)
    start = time.monotonic()
    why = transformers_model_problem("mllm_score", "tiny/blip")
    assert f"cannot be fetched: {NOBODY} cannot be reached" in why and "\n" not in why
    assert time.monotonic() - start < 3  # one try, not huggingface_hub's ~25 s of retries


def test_the_stages_preflight_and_their_workers_check_the_same_way(monkeypatch, tmp_path, filled, blip):
    """`weights_problem` (the run's preflight) of recaption (transformers) and mllm_score; a worker's load
    asks again (its node's cache), so a missing model there is one line, and a cached hub id loads."""
    from curate.caption.recaption import Recaption
    from curate.models.clip import ModelLoadError
    from curate.scorers.mllm import MllmScore

    _hub(monkeypatch, tmp_path, offline=True)
    rec = Recaption(backend="transformers", model="tiny/blip", device="cpu", max_tokens=4, num_beams=1)
    score = MllmScore(model="tiny/blip", device="cpu")
    assert rec.weights_problem().startswith("recaption: transformers model tiny/blip: the local Hugging Face cache")
    assert score.weights_problem().startswith("mllm_score: transformers model tiny/blip: the local Hugging Face cache")
    assert Recaption(backend="transformers", model=str(blip)).weights_problem() is None
    assert MllmScore(backend="endpoint", model="tiny/blip", base_url=NOBODY).weights_problem() is None
    with pytest.raises(ModelLoadError, match="^recaption: transformers model tiny/blip: .* HF_HUB_OFFLINE is set"):
        rec.make_captioner().load()
    with pytest.raises(ModelLoadError, match="^mllm_score: transformers model tiny/blip: .* HF_HUB_OFFLINE is set"):
        score.setup()
    _use(monkeypatch, filled)
    assert rec.weights_problem() is None and score.weights_problem() is None
    from PIL import Image

    captions = rec.make_captioner().load().caption([Image.new("RGB", (64, 64), "red")])  # by hub id, from the cache
    assert len(captions) == 1


def test_recipe_time_check_needs_no_request(monkeypatch, tmp_path):
    """A recipe is valid whatever this machine's cache and network hold: recaption's recipe-time check no
    longer loads a hub id's config (which, with the hub unreachable, took ~25 s of retries)."""
    from curate.caption.recaption import Recaption

    _hub(monkeypatch, tmp_path, offline=False, endpoint=NOBODY)
    start = time.monotonic()
    Recaption(backend="transformers", model="nobody/no-such-vlm")
    assert time.monotonic() - start < 1


def _urls(tmp_path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "caption": ["a red square"]}), path)
    return path


@pytest.mark.parametrize("stage", ["recaption", "mllm_score"])
def test_cli_refuses_an_uncached_hub_model_before_any_work(monkeypatch, tmp_path, cli_inprocess, stage):
    """Before: the first worker to reach the stage failed, after the input was split and images
    downloaded. Now the run stops in one line (exit 2) before the output folder is made."""
    _hub(monkeypatch, tmp_path, offline=True)
    recipe = tmp_path / "r.yaml"
    model = "Salesforce/blip-image-captioning-base"
    cfg = ({"backend": "transformers", "model": model} if stage == "recaption" else {"model": model})
    recipe.write_text(json.dumps({"name": "r", "input": {"url_col": "url", "text_col": "caption"},
                                  "stages": [{"download": {}}, {stage: cfg}]}))
    out = tmp_path / "out"
    proc = cli_inprocess("run", str(recipe), "-i", str(_urls(tmp_path)), "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and f"{stage}: transformers model {model}: the local Hugging Face cache" in line
    assert f"huggingface-cli download {model}" in line and not out.exists()


def test_documented_fetch_then_offline_run(tmp_path, fake_hub):
    """docs/recaptioning.md: `huggingface-cli download ID` once (here from the loopback hub), then
    `HF_HUB_OFFLINE=1 curate run image_text_recaption ... --set recaption.model=ID` captions with the model
    found in the cache by its hub id: preflight, then the Ray workers' own check and from_pretrained. A
    subprocess with its own local Ray, so the workers get this environment."""
    import pyarrow.parquet as pq

    from curate.demo.corpus import generate_corpus, write_url_list
    from curate.demo.server import DemoServer

    cache = download(fake_hub, tmp_path / "cache")
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, 12, seed=5)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # not the session's Ray: its workers
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_ENDPOINT=NOBODY,  # lack this environment
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = tmp_path / "out"
    with DemoServer(corpus) as server:
        urls = write_url_list(corpus, server.url, corpus / "urls.parquet")
        done = subprocess.run([sys.executable, "-m", "curate.cli", "run", "image_text_recaption", "-i", str(urls),
                               "-o", str(out), "--set", "recaption.backend=transformers", "--set",
                               "recaption.model=tiny/blip", "--set", "recaption.rows=all", "--set",
                               "recaption.max_tokens=4", "--set", "recaption.num_beams=1"],
                              env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = pq.read_table(str(out / "meta")).to_pylist()
    assert len(meta) == 12  # every row accounted for
    assert any(r["recaption_model"] == "transformers:tiny/blip" for r in meta)
