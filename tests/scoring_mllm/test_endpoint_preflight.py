"""The endpoint preflight (curate/endpoint/preflight.py) against the real loopback chat server: a server that
is down, refuses the key or does not serve the model stops the run in one line before any work; one
without /models (404) or that serves the model lets it through."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.caption.recaption import Recaption
from curate.endpoint.preflight import endpoint_problem
from curate.scorers.mllm import MllmScore

NOBODY = "http://127.0.0.1:9/v1"  # nothing listens there


def test_a_server_that_is_down_is_refused():
    why = endpoint_problem("mllm_score", NOBODY, "tiny", timeout_s=2)
    assert why.startswith(f"mllm_score: the model server at {NOBODY} cannot be reached (")
    assert "mllm_score.check_endpoint: false" in why and "\n" not in why


def test_a_refused_key_is_refused_and_says_which_variable(chat_server, monkeypatch):
    chat_server.api_key, chat_server.models = "sekret", ["tiny"]
    why = endpoint_problem("recaption", chat_server.url, "tiny")
    assert "refused the request (HTTP 401); no API key was sent: set recaption.api_key_env" in why
    why = endpoint_problem("recaption", chat_server.url, "tiny", api_key_env="MY_KEY")
    assert "MY_KEY (recaption.api_key_env) is not set in this environment" in why
    monkeypatch.setenv("MY_KEY", "wrong")
    stage = Recaption(backend="endpoint", base_url=chat_server.url, model="tiny", api_key_env="MY_KEY")
    assert "HTTP 401); check the key in MY_KEY" in stage.endpoint_problem()
    monkeypatch.setenv("MY_KEY", "sekret")  # the stage's own key, read from this environment
    assert stage.endpoint_problem() is None and chat_server.requests == 0


def test_a_model_the_server_does_not_serve_is_refused_naming_a_few_it_does(chat_server):
    chat_server.models = [f"org/model-{i}" for i in range(8)]
    why = endpoint_problem("mllm_score", chat_server.url, "org/modle-1")
    assert "does not serve model 'org/modle-1'; it serves 'org/model-0', 'org/model-1'" in why
    assert "'org/model-4' and 3 more; set mllm_score.model to the served name" in why
    assert "model-5" not in why and "\n" not in why
    chat_server.models = []
    assert "it lists no models" in endpoint_problem("mllm_score", chat_server.url, "tiny")


def test_a_server_without_models_or_that_serves_the_model_is_let_through(chat_server):
    assert chat_server.models is None  # GET /v1/models answers 404, as some proxies do: not checked
    assert endpoint_problem("mllm_score", chat_server.url, "anything") is None
    chat_server.models = ["tiny", "llava:latest"]
    assert endpoint_problem("mllm_score", chat_server.url, "tiny") is None
    assert endpoint_problem("mllm_score", chat_server.url + "/", "llava") is None  # Ollama's implicit tag
    assert chat_server.model_listings == 3 and chat_server.requests == 0


def test_the_stage_setting_skips_it_and_other_backends_are_not_asked(chat_server):
    assert MllmScore(backend="endpoint", base_url=NOBODY, model="m", check_endpoint=False).endpoint_problem() is None
    assert Recaption(backend="endpoint", base_url=NOBODY, model="m").endpoint_problem().startswith("recaption:")
    assert Recaption(backend="coca", model="coca_ViT-B-32", check_model=False, base_url=NOBODY).endpoint_problem() is None


@pytest.mark.parametrize("case", ["down", "401", "wrong_model"])
def test_cli_refuses_in_one_line_before_the_output_folder_is_made(chat_server, tmp_path, cli_inprocess, case):
    """Before: every row was downloaded, sent, retried and failed (exit 3, 'every row failed')."""
    chat_server.models = ["served-vlm"]
    if case == "401":
        chat_server.api_key = "sekret"
    url = NOBODY if case == "down" else chat_server.url
    model = "other-vlm" if case == "wrong_model" else "served-vlm"
    urls = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "caption": ["a red square"]}), urls)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"name": "r", "input": {"url_col": "url", "text_col": "caption"}, "stages": [
        {"download": {}}, {"mllm_score": {"backend": "endpoint", "model": model, "base_url": url}}]}))
    out = tmp_path / "out"
    proc = cli_inprocess("run", str(recipe), "-i", str(urls), "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and not out.exists()
    expect = {"down": "cannot be reached", "401": "refused the request (HTTP 401)",
              "wrong_model": "does not serve model 'other-vlm'; it serves 'served-vlm'"}[case]
    assert lines[0].startswith("error: mllm_score: the model server at ") and expect in lines[0], lines[0]
    assert chat_server.requests == 0
