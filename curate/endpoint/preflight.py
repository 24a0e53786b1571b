"""Whether the server an endpoint stage will call is there, takes our key and serves our model, found out
before any work.

Why: with the server down, the key refused or the model name wrong, a run used to send every row, retry
each one, and fail them all at the end (the "every row failed" exit 3), after the input was split and the
images downloaded. One cheap request before the run says so in one line instead: `GET {base_url}/models`,
which the OpenAI API and the OpenAI-compatible servers of vLLM, SGLang, TGI, llama.cpp and Ollama all
answer with `{"object": "list", "data": [{"id": <served name>, ...}]}`.

What it refuses: a server that cannot be reached (refused, DNS, timeout), one that answers 401/403, and
one that lists its models without ours. What it lets through unchecked: any other answer (a proxy without
/models answers 404; a 5xx or a shape it does not know), so a server that works for chat but not for
/models is never refused. A stage's `check_endpoint: false` skips it (a server that starts on demand).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 10.0  # the one request's limit (the stage's timeout_s when that is shorter)
SHOWN = 5  # served models named in the refusal


def listed_models(payload) -> list[str] | None:
    """The served names in a /models answer (`data[].id`), None when it is not that shape."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    ids = [m.get("id") for m in data if isinstance(m, dict)]
    return [i for i in ids if isinstance(i, str)] if all(isinstance(i, str) for i in ids) else None


def serves(model: str, ids: list[str]) -> bool:
    """Whether `model` is one of `ids`; Ollama lists `name:latest` and answers to `name` as well."""
    return model in ids or (":" not in model and f"{model}:latest" in ids)


def _offered(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def endpoint_problem(stage: str, base_url: str, model: str, *, api_key: str | None = None,
                     api_key_env: str | None = None, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
    """Why `stage` cannot use `model` at `base_url` (one line naming the fix), None when it can or the
    server does not say (see the module docstring). One GET, no retries, with the stage's Bearer key."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    skip = f"(or set {stage}.check_endpoint: false to skip this check)"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout_s, follow_redirects=True)
    except httpx.TimeoutException:
        return (f"{stage}: the model server at {base_url} did not answer GET /models within {timeout_s:g}s; "
                f"start it or fix {stage}.base_url {skip}")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return (f"{stage}: the model server at {base_url} cannot be reached ({why[:160]}); start it or fix "
                f"{stage}.base_url {skip}")
    if resp.status_code in (401, 403):
        if not api_key_env:
            key = f"no API key was sent: set {stage}.api_key_env to the variable that holds it"
        elif not api_key:
            key = f"no API key was sent: {api_key_env} ({stage}.api_key_env) is not set in this environment"
        else:
            key = f"check the key in {api_key_env} ({stage}.api_key_env)"
        return f"{stage}: the model server at {base_url} refused the request (HTTP {resp.status_code}); {key}"
    if resp.status_code != 200:
        log.info("%s: GET %s answered HTTP %s; the model name is not checked", stage, url, resp.status_code)
        return None
    try:
        ids = listed_models(resp.json())
    except ValueError:
        ids = None
    if ids is None:
        log.info("%s: GET %s answered no model list; the model name is not checked", stage, url)
        return None
    if serves(model, ids):
        return None
    offers = f"it serves {_offered(ids)}" if ids else "it lists no models"
    return (f"{stage}: the model server at {base_url} does not serve model {model!r}; {offers}; set "
            f"{stage}.model to the served name {skip}")
