"""The renderer draws what its attributes say, and captions say what the renderer drew."""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from curate.demo import captions, images


def test_render_is_deterministic_and_seed_sensitive():
    a_img, a = images.render([7, 1])
    b_img, b = images.render([7, 1])
    c_img, _ = images.render([7, 2])
    assert a == b
    assert images.encode(a_img, "jpeg", 90) == images.encode(b_img, "jpeg", 90)
    assert images.encode(a_img, "png") != images.encode(c_img, "png")


def test_attribute_vocabulary_and_ranges():
    assert len(images.SHAPES) >= 6 and len(images.COLOURS) >= 8
    attrs = [images.sample_attributes([3, i]) for i in range(600)]
    for key, vocab in [("shape", images.SHAPES), ("colour", images.COLOURS), ("count", images.COUNTS),
                       ("size", images.SIZES), ("position", images.POSITIONS), ("texture", images.TEXTURES),
                       ("background", images.BACKGROUNDS)]:
        assert {a[key] for a in attrs} == set(vocab), key
    assert all(96 <= a["width"] <= 192 and 96 <= a["height"] <= 192 for a in attrs)
    assert all(max(a["width"], a["height"]) / min(a["width"], a["height"]) <= 2.0 for a in attrs)
    assert any(a["width"] != a["height"] for a in attrs)
    formats = [a["format"] for a in attrs]
    assert 0.05 < formats.count("png") / len(formats) < 0.3
    assert all(a["size"] == "small" for a in attrs if a["count"] > 2)


def _shape_mask(img, colour):
    arr = np.asarray(img).astype(int)
    return np.abs(arr - np.array(images.COLOURS[colour])).max(axis=2) < 40


@pytest.mark.parametrize("shape", images.SHAPES)
def test_count_and_position_are_drawn_truthfully(shape):
    for k in range(40):
        img, a = images.render([11, k], shape=shape, texture="plain")
        mask = _shape_mask(img, a["colour"])
        labels, found = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = ndimage.sum(mask, labels, range(1, found + 1))
        assert (sizes >= 10).sum() == a["count"], (a, sizes)  # star tips may leave single stray pixels
        ys, xs = np.nonzero(mask)
        cx, cy = xs.mean() / a["width"], ys.mean() / a["height"]
        expect = {"left": cx < 0.5, "right": cx > 0.5, "top": cy < 0.5, "bottom": cy > 0.5,
                  "center": 0.3 < cx < 0.7 and 0.3 < cy < 0.7}
        assert expect[a["position"]], (a, cx, cy)


def test_large_shapes_are_larger_than_small_ones():
    def area(size):
        img, a = images.render([5, 0], shape="square", colour="red", texture="plain", count=1, size=size,
                               width=160, height=160)
        return _shape_mask(img, "red").mean()

    assert area("large") > 2.5 * area("small")


def test_all_textures_and_extreme_canvases_render():
    for t in images.TEXTURES:
        img, a = images.render([1, 0], texture=t, width=480, height=40)
        assert img.size == (480, 40) and a["texture"] == t
        img, _ = images.render([1, 1], texture=t, width=600, height=600)  # larger than the noise field
        assert img.size == (600, 600)


def _mentions(text, word):
    return re.search(rf"\b{word}(s|es)?\b", text) is not None


def test_templates_are_many_and_truthful():
    assert len(set(captions.TEMPLATES)) >= 20
    rng = np.random.default_rng(0)
    for k in range(300):
        a = images.sample_attributes([2, k])
        for t in range(len(captions.TEMPLATES)):
            text = captions.caption(a, rng, template=t)
            assert _mentions(text, a["colour"]) and _mentions(text, a["shape"]), text
            assert not re.search(r"\ba [aeiou]", text), text
            assert not captions.is_boilerplate(text), text
        if a["count"] > 1:  # random choice never picks a singular-only template for several shapes
            for _ in range(10):
                text = captions.caption(a, rng)
                plural = captions.plural(a["shape"])
                assert re.search(rf"\b{plural}\b", text) or str(a["count"]) in text, text


def test_boilerplate_is_recognised():
    rng = np.random.default_rng(1)
    texts = {captions.boilerplate(rng) for _ in range(500)}
    assert len(texts) > 50
    assert all(captions.is_boilerplate(t) for t in texts), [t for t in texts if not captions.is_boilerplate(t)]
    for t in ["IMG_1234.jpg", "click here", "image", "DSC_0042.JPG", "untitled", "photo", "Download now", "thumbnail"]:
        assert t in captions.BOILERPLATE_FIXED or re.match(r"(IMG|DSC)_\d{4}\.(jpg|JPG)", t)
        assert captions.is_boilerplate(t)
    assert not captions.is_boilerplate("a photo of two red circles")
