"""Whether a transformers model named by a stage (a hub id or a local folder) can be loaded on this machine,
found out before any work.

Why: `recaption` (transformers backend) and `mllm_score` load their model with `from_pretrained` in the
first worker to reach the stage. A hub id that is neither in the local Hugging Face cache nor reachable
failed there, after the input was split and images downloaded, once per worker, after ~25 s of
huggingface_hub retries. The run's preflight (curate/runner.py `_check_models`) and each worker before
it loads (a worker on another node has its own cache) ask `transformers_model_problem` instead: the local
cache through huggingface_hub's own lookup (`try_to_load_from_cache`, which knows its layout and
revisions), without network; when something is missing, HF_HUB_OFFLINE refuses at once, else one
request (the hub's model-info API, no retries) must find the model at the revision asked for.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

HUB_CHECK_TIMEOUT_S = 5.0  # the one request to the hub when a model is not cached


def local_model_dir(model: str) -> Path | None:
    """The folder `model` names, or None for a hub id: a path-like name (/, ., ~) or an existing folder,
    as transformers decides (`os.path.isdir` first), with ~ expanded (transformers does not)."""
    path = Path(model).expanduser()
    if model.startswith(("/", ".", "~")) or path.is_dir():
        return path
    return None


def _weights_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(index files of sharded weights, single weights files) in the order from_pretrained looks for them."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    return (SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME), (SAFE_WEIGHTS_NAME, WEIGHTS_NAME)


def missing_files(lookup: Callable[[str], str | None]) -> str | None:
    """What a model's files lack for from_pretrained (its config.json, its weights, a shard a weights index
    names), None when nothing; `lookup(filename)` gives a local path or None."""
    from transformers.utils import CONFIG_NAME

    if lookup(CONFIG_NAME) is None:
        return CONFIG_NAME
    indexes, singles = _weights_names()
    for index in indexes:
        path = lookup(index)
        if path is None:
            continue
        try:
            shards = sorted(set(json.loads(Path(path).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            return f"a readable {index} ({type(err).__name__})"
        gone = [s for s in shards if lookup(s) is None]
        return f"{gone[0]} (one of {len(shards)} weight shards)" if gone else None
    if any(lookup(name) is not None for name in singles):
        return None
    return f"weights ({' or '.join(singles + indexes)})"


def _folder_problem(folder: Path, model: str, trust_remote_code: bool) -> str | None:
    """Why a local model folder will not load: absent, no config.json or weights, a config transformers
    cannot read (bad JSON, an unknown model_type)."""
    if not folder.is_dir():
        return f"model folder {model} does not exist"
    lacks = missing_files(lambda name: str(folder / name) if (folder / name).is_file() else None)
    if lacks:
        return f"model folder {model} has no {lacks}"
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - bad JSON, unknown model_type, custom code refused: one line
        msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"model folder {model} holds a config transformers cannot load: {msg[:200]}"
    return None


def _cached_missing(repo: str, revision: str | None) -> str | None:
    """What the local Hugging Face cache lacks of `repo` at `revision` (None: all there), read through
    huggingface_hub's `try_to_load_from_cache` (a branch or tag name resolves through the cache's refs)."""
    from huggingface_hub import constants, try_to_load_from_cache

    def lookup(name: str) -> str | None:
        found = try_to_load_from_cache(repo, name, cache_dir=constants.HF_HUB_CACHE, revision=revision)
        return found if isinstance(found, str) else None  # None or _CACHED_NO_EXIST

    return missing_files(lookup)


def _hub_problem(repo: str, revision: str | None) -> str | None:
    """Why the hub does not serve `repo` at `revision` to this machine, None when it does: one GET of the
    model-info API (huggingface_hub's HfApi, the token of HF_TOKEN, no retries), HUB_CHECK_TIMEOUT_S; for a
    gated repo (whose info is public, its files not) a second one, whether this token may read it."""
    import requests
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    at = f" at revision {revision}" if revision else ""
    try:
        info = HfApi(endpoint=constants.ENDPOINT).model_info(repo, revision=revision, timeout=HUB_CHECK_TIMEOUT_S)
        if getattr(info, "gated", False):  # HfApi.auth_check's request, with a timeout
            hf_raise_for_status(get_session().get(f"{constants.ENDPOINT}/api/models/{repo}/auth-check",
                                                  headers=build_hf_headers(), timeout=HUB_CHECK_TIMEOUT_S))
    except GatedRepoError:
        return f"is gated on {constants.ENDPOINT}: accept its terms there and set HF_TOKEN"
    except RevisionNotFoundError:
        return f"has no revision {revision} on {constants.ENDPOINT}"
    except RepositoryNotFoundError:
        return f"is not on {constants.ENDPOINT} (or is private: set HF_TOKEN)"
    except HfHubHTTPError as err:
        code = getattr(err.response, "status_code", "?")
        return f"could not be looked up{at} on {constants.ENDPOINT} (HTTP {code})"
    except (requests.RequestException, OSError, ValueError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"cannot be fetched: {constants.ENDPOINT} cannot be reached ({why[:160]})"
    return None


def model_name_problem(stage: str, model: str, trust_remote_code: bool = False) -> str | None:
    """What is wrong with `model` whatever this machine's cache and network hold (recipe-time, no request):
    a local folder that will not load, or a name that is no hub id. None for a loadable folder or any
    well-formed hub id (whether that is cached or reachable is `transformers_model_problem`'s question)."""
    if not model:
        return f"{stage} needs `model` (a hub id or a local folder)"
    folder = local_model_dir(model)
    if folder is not None:
        why = _folder_problem(folder, model, trust_remote_code)
        return f"{stage}: {why}; set {stage}.model to a folder saved with save_pretrained, or a hub id" if why else None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return f"{stage}: model {model!r} is neither a folder nor a Hugging Face hub id (org/name)"
    return None


def transformers_model_problem(stage: str, model: str, revision: str | None = None,
                               trust_remote_code: bool = False) -> str | None:
    """Why `stage` cannot load the transformers model `model` (a hub id or a local folder) on this machine, in
    one line naming the fix; None when it can (a loadable folder, a hub id cached with its config and
    weights, or, when not offline, one the hub serves, which from_pretrained will then fetch).

    `revision` (a branch, tag or commit; None: main) is the one from_pretrained will be given."""
    why = model_name_problem(stage, model, trust_remote_code)
    if why or local_model_dir(model) is not None:
        return why
    from huggingface_hub import constants

    lacks = _cached_missing(model, revision)
    if lacks is None:
        return None
    at = f" --revision {revision}" if revision else ""
    fetch = f"huggingface-cli download {model}{at}"
    where = f"the local Hugging Face cache ({constants.HF_HUB_CACHE}) lacks its {lacks}"
    if constants.HF_HUB_OFFLINE:
        return (f"{stage}: transformers model {model}: {where} and HF_HUB_OFFLINE is set; fetch it once where the "
                f"network is reachable ({fetch}, with the same HF_HUB_CACHE) or set {stage}.model to a local folder")
    why = _hub_problem(model, revision)
    if why is None:
        return None
    return (f"{stage}: transformers model {model}{' ' + revision if revision else ''} {why}, and {where}; "
            f"fetch it once where the hub is reachable ({fetch}) and run with HF_HUB_OFFLINE=1, or set "
            f"{stage}.model to a local folder")


def require_transformers_model(stage: str, model: str, revision: str | None = None,
                               trust_remote_code: bool = False) -> None:
    """`transformers_model_problem` as a ModelLoadError, for a worker about to load the model: on a node whose
    cache lacks it (offline), one line instead of from_pretrained's retries and traceback."""
    from curate.models.clip import ModelLoadError

    why = transformers_model_problem(stage, model, revision, trust_remote_code)
    if why:
        raise ModelLoadError(why)

