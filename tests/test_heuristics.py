"""Heuristic filters on constructed inputs: every reason code fires on what it is for and not on clean rows."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from skimage import data as skimage_data

from curate import schema
from curate.demo.images import encode, render
from curate.filters.image_quality import ImageQuality, thumbnail_stats
from curate.filters.language import Language
from curate.filters.text_quality import TextQuality
from curate.recipe import RecipeError, build_recipe


def _rows(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    return pa.table({"uid": [f"u{i}" for i in range(n)], **cols, "status": [schema.OK] * n,
                     "stage": pa.nulls(n, pa.string()), "reason": pa.nulls(n, pa.string())})


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# -- image_quality -----------------------------------------------------------------------------------------

def test_image_quality_reasons():
    rng = np.random.default_rng(0)
    white = _jpeg(np.full((256, 256, 3), 250))
    flat_noisy = _jpeg(np.clip(120 + rng.normal(0, 0.7, (300, 200, 3)), 0, 255))  # JPEG-ish grain on one colour
    dot = np.full((256, 256, 3), 255)
    dot[100:110, 100:110] = 0  # one small dark square: spread is high, entropy is tiny
    dotted = _jpeg(dot)
    photo = _jpeg(skimage_data.astronaut())  # a real 512x512 photograph (shipped in scikit-image), draft-decoded
    # equal-brightness red on green: blank in grey scale, not in colour
    rg = np.zeros((128, 128, 3))
    rg[..., 1] = 150
    rg[32:96, 32:96] = (255, 0, 0)
    out = ImageQuality(min_entropy=0.2).check(_rows(image=[white, flat_noisy, dotted, photo, _jpeg(rg),
                                                           b"not an image", None]))
    assert out == ["image_uniform", "image_uniform", "image_low_entropy", None, None, "image_undecodable", None]
    # defaults: the entropy check is off, so the small-dot picture stays
    assert ImageQuality().check(_rows(image=[dotted, photo])) == [None, None]


def test_demo_images_pass_the_default_thresholds():
    """The shipped demo pictures (flat backgrounds with a few shapes) must not read as blank."""
    stats = [thumbnail_stats(encode(render(s)[0].resize((64, 64)))) for s in range(60)]
    assert min(s for s, _ in stats) > ImageQuality().min_std


# -- text_quality ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,reason", [
    ("www.example-shop.com/products/1234", "caption_url"),
    ("https://cdn.site.net/img/2019/05/a.jpg", "caption_url"),
    ("photo http://x.co/a.jpg", "caption_url"),
    ("example.com", "caption_url"),
    ("shoes shoes shoes shoes cheap", "caption_repeated_token"),
    ("buy cheap shoes buy cheap shoes buy cheap shoes", "caption_repeated_ngram"),
    ("a dog runs along the beach at sunset", None),
    ("sunset over the bay, more at https://example.com/gallery", None),
    ("red red car", None),  # too short to judge repetition
    ("Mr. Smith visits Washington D.C. in May", None),
    ("", None),  # caption_text owns empty captions
])
def test_text_quality_reasons(text, reason):
    assert TextQuality().check(_rows(text=[text])) == [reason]


def test_text_quality_thresholds_are_configurable():
    text = "one two three one two three"
    assert TextQuality().verdict(text) == "caption_repeated_ngram"
    assert TextQuality(max_ngram_fraction=0.5).verdict(text) is None
    assert TextQuality(max_url_fraction=1.0).verdict("photo http://x.co/a.jpg") is None


# -- language ---------------------------------------------------------------------------------------------------

LANG_SAMPLES = {
    "en": "a photo of two red circles on a plain white background",
    "de": "ein Foto von zwei roten Kreisen auf einem weißen Hintergrund",
    "fr": "une photo de deux cercles rouges sur un fond blanc",
    "es": "una foto de dos círculos rojos sobre un fondo blanco",
    "ru": "фотография двух красных кругов на белом фоне",
    "ja": "白い背景に二つの赤い丸の写真",
}


def test_language_identifies_and_tags():
    langs = list(LANG_SAMPLES)
    t = _rows(text=[LANG_SAMPLES[k] for k in langs] + [""])
    out = Language(languages=["en", "de"]).process(t)
    assert out.column("language").to_pylist() == langs + [None]
    assert all(s > 0.5 for s in out.column("language_score").to_pylist()[:-1])
    assert out.column("reason").to_pylist() == [None, None] + ["language_other"] * 4 + [None]
    # an empty list tags every row and drops none
    tagged = Language(languages=[]).process(t)
    assert tagged.column("status").to_pylist() == [schema.OK] * len(t)


def test_language_uncertain_and_inactive_rows():
    long_en = "The quick brown fox jumps over the lazy dog while the children watch from the window"
    t = _rows(text=["blue squares", long_en, LANG_SAMPLES["de"]])  # lid.176 scores: ~0.71, ~0.87
    t = schema.mark(t, pa.array([False, False, True]), schema.DROPPED, "earlier", "caption_too_short")
    out = Language(languages=["en"], min_score=0.8).process(t)
    assert out.column("reason").to_pylist() == ["language_uncertain", None, "caption_too_short"]
    assert out.column("language").to_pylist()[2] is None  # rows already out are not touched


def test_language_model_path_must_exist(tmp_path):
    with pytest.raises(RecipeError, match="language model file not found"):
        build_recipe({"name": "t", "input": {"path": "x.parquet"}, "output": {"path": str(tmp_path)},
                      "stages": [{"language": {"model_path": str(tmp_path / "nope.ftz")}}]})
