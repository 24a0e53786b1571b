"""The shared CLIP loader: random-init tiny model, our checkpoint round trip, and its one-line errors."""
import numpy as np
import pytest
from PIL import Image

from curate.models.clip import ModelLoadError, load_clip


@pytest.fixture(scope="module")
def tiny():
    import torch

    torch.manual_seed(0)
    return load_clip("curate-tiny", device="cpu")


def test_embeddings_are_unit_norm_and_batch_independent(tiny):
    ims = [Image.new("RGB", (80, 60), c) for c in ("red", "blue", "green")]
    img = tiny.embed_images(ims)
    txt = tiny.embed_texts(["a red square", "a blue square", "a green square"])
    assert img.shape == txt.shape == (3, tiny.dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    # same image alone or in a batch: same embedding (eval mode, no batch statistics)
    np.testing.assert_allclose(tiny.embed_images(ims[1:2])[0], img[1], atol=1e-5)
    assert tiny.embed_texts([]).shape == (0, tiny.dim)


def test_checkpoint_round_trip(tiny, tmp_path):
    import torch

    ckpt = tmp_path / "c.pt"
    torch.save({"state_dict": tiny.model.state_dict(), "config": {"model": "curate-tiny"}}, ckpt)
    again = load_clip(checkpoint=str(ckpt), device="cpu")  # name read from the checkpoint
    assert again.name == "curate-tiny"
    im = [Image.new("RGB", (64, 64), "white")]
    np.testing.assert_allclose(again.embed_images(im), tiny.embed_images(im), atol=1e-5)


@pytest.mark.parametrize("kwargs, msg", [
    ({"model": "no-such-model"}, "unknown open_clip model"),
    ({"checkpoint": "/nonexistent/c.pt"}, "checkpoint not found"),
    ({"model": "curate-tiny", "checkpoint": "x", "pretrained": "y"}, "not both"),
    ({"model": "curate-tiny", "precision": "fp8"}, "unknown precision"),
])
def test_errors_are_one_line(kwargs, msg):
    with pytest.raises(ModelLoadError, match=msg) as err:
        load_clip(device="cpu", **kwargs)
    assert "\n" not in str(err.value)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_clip(checkpoint=str(bad), device="cpu")


RANDOM_WEIGHT_STAGES = [  # (stage, an earlier stage writing what it reads)
    ("doc_clip", [{"parse_documents": {}}, {"doc_download": {}}]),
    ("keyframe_clip_score", [{"download_video": {}}, {"clip_split": {}}]),
]


def _recipe(prior: list, stage: str, cfg: dict) -> dict:
    return {"name": "t", "input": {"path": "x"}, "output": {"path": "y"}, "stages": [*prior, {stage: cfg}]}


@pytest.mark.parametrize("stage, prior", RANDOM_WEIGHT_STAGES)
def test_clip_stages_refuse_random_weights_unless_opted_in(stage, prior):
    """Neither pretrained nor checkpoint would score with a random-init model: noise decisions. The recipe
    is refused in one line naming the fix; `random_init: true` (tests, demos) lets it through."""
    from curate.recipe import RecipeError, build_recipe

    for cfg in ({}, {"model": "curate-tiny"}):
        with pytest.raises(RecipeError, match="give `pretrained:` .* or `checkpoint:`") as err:
            build_recipe(_recipe(prior, stage, cfg))
        assert "\n" not in str(err.value) and stage in str(err.value)
    build_recipe(_recipe(prior, stage, {"model": "curate-tiny", "random_init": True}))
    build_recipe(_recipe(prior, stage, {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}))  # no download
    with pytest.raises(RecipeError, match="unknown open_clip model 'ViT-Nope-99'"):
        build_recipe(_recipe(prior, stage, {"model": "ViT-Nope-99", "random_init": True}))


def test_cli_refuses_random_doc_clip_before_any_work(tmp_path, cli_inprocess):
    pages = tmp_path / "pages.jsonl"
    pages.write_text('{"url": "http://127.0.0.1:9/p.html"}\n')
    out = tmp_path / "out"
    proc = cli_inprocess("run", "interleaved", "-i", str(pages), "-o", str(out), "--set", "doc_clip.pretrained=null")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "doc_clip has no weights for ViT-B-32" in proc.stderr
    assert "random_init: true" in proc.stderr and not out.exists()


def _hub(monkeypatch, tmp_path, offline: bool, endpoint: str = "http://127.0.0.1:9"):
    """An empty Hugging Face cache under tmp_path, HF_HUB_OFFLINE and HF_ENDPOINT as given."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    return tmp_path / "hub"


def test_hub_weights_are_checked_in_the_cache_and_on_the_network(monkeypatch, tmp_path):
    """A hub tag whose weights are neither cached nor reachable failed in the first worker to load the
    model, after ~45 s of huggingface_hub retries and after the input was parsed and downloaded; now
    `hub_weights_problem` says so at once: cache lookup offline, one HEAD request otherwise."""
    from curate.demo.server import DemoServer
    from curate.models.clip import hub_weights_problem

    hub = _hub(monkeypatch, tmp_path, offline=True)
    why = hub_weights_problem("ViT-B-32", "laion2b_s34b_b79k")
    assert "not in the local Hugging Face cache" in why and "HF_HUB_OFFLINE" in why
    _hub(monkeypatch, tmp_path, offline=False)  # 127.0.0.1:9: nothing listens
    assert "cannot be reached" in hub_weights_problem("ViT-B-32", "laion2b_s34b_b79k")
    (tmp_path / "www").mkdir()
    with DemoServer(tmp_path / "www") as server:  # any HTTP answer (a 404 here) means the host is reachable
        _hub(monkeypatch, tmp_path, offline=False, endpoint=server.url)
        assert hub_weights_problem("ViT-B-32", "laion2b_s34b_b79k") is None
    # cached (the hub cache's layout: refs/main names the snapshot holding the file): fine offline
    _hub(monkeypatch, tmp_path, offline=True)
    repo = hub / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    assert hub_weights_problem("ViT-B-32", "laion2b_s34b_b79k") is None
    assert hub_weights_problem("ViT-B-32", str(tmp_path / "w.pt")) is None  # a file: no hub tag


def test_cli_refuses_uncached_hub_weights_before_any_work(monkeypatch, tmp_path, cli_inprocess):
    _hub(monkeypatch, tmp_path, offline=True)
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"texts": ["A page.", null], "images": [null, "http://127.0.0.1:9/a.jpg"]}\n')
    out = tmp_path / "out"
    proc = cli_inprocess("run", "interleaved", "-i", str(docs), "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "doc_clip: the weights of ViT-B-32/laion2b_s34b_b79k" in proc.stderr
    assert "--set doc_clip.model=curate-tiny --set doc_clip.pretrained=null --set doc_clip.random_init=true" in proc.stderr
    assert not out.exists()


def test_url_weights_offline_are_refused_without_a_request(monkeypatch, tmp_path):
    """A tag whose weights are a plain URL (older open_clip releases) was checked with a HEAD request even
    under HF_HUB_OFFLINE: offline now means no request leaves the machine."""
    import open_clip

    from curate.models import clip

    _hub(monkeypatch, tmp_path, offline=True)
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.cache/clip
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda m, t: {"url": "https://weights.invalid/vit.pt"})
    monkeypatch.setattr(clip, "_reach", lambda url: pytest.fail(f"a request to {url} while offline"))
    why = clip.hub_weights_problem("ViT-B-32", "sometag")
    assert "not cached here" in why and "HF_HUB_OFFLINE" in why


@pytest.mark.parametrize("offline", [True, False])
def test_a_worker_checks_the_weights_on_its_own_node(monkeypatch, tmp_path, offline):
    """The preflight ran on the driver; a worker on a node whose cache lacks the weights went into open_clip's
    download (offline: its error; unreachable: ~25 s of hub retries first). It asks the same question now,
    and fails in one line at once."""
    import time

    from curate.caption.recaption import Recaption
    from curate.models.clip import ModelLoadError
    from curate.scorers.clip_score import ClipScore

    _hub(monkeypatch, tmp_path, offline=offline)
    clip = ClipScore(model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    coca = Recaption(backend="coca", model="coca_ViT-B-32", pretrained="laion2b_s13b_b90k", device="cpu")
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="^clip_score: the weights of ViT-B-32/laion2b_s34b_b79k are not"):
        clip.load_clip()
    with pytest.raises(ModelLoadError, match="^recaption: the weights of coca_ViT-B-32/laion2b_s13b_b90k are not"):
        coca.setup()
    assert time.monotonic() - start < 5
