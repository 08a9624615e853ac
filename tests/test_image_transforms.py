"""Drift transforms: Pillow-exact brightness, parameter checks, reproducible noise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from producers.idcard_scenes import generate_scene
from producers.image_transforms import (
    NAMED_CASTS,
    blur,
    brightness,
    colour_cast,
    contrast,
    parse_transforms,
    resize,
)

IMAGE = generate_scene(3, size=(160, 120)).image


def test_brightness_is_the_chapter_listing() -> None:
    expected = np.asarray(ImageEnhance.Brightness(Image.fromarray(IMAGE)).enhance(0.6))
    assert np.array_equal(brightness(IMAGE, 0.6), expected)
    assert np.array_equal(parse_transforms(["brightness=0.6"])(IMAGE), expected)
    assert brightness(IMAGE, 0.6).mean() < 0.65 * IMAGE.mean()


def test_each_transform_changes_what_it_should() -> None:
    assert contrast(IMAGE, 0.3).std() < 0.5 * IMAGE.std()
    assert np.array_equal(contrast(IMAGE, 1.0), IMAGE)
    warm = colour_cast(IMAGE, "warm").reshape(-1, 3).mean(axis=0)
    base = IMAGE.reshape(-1, 3).mean(axis=0)
    assert warm[0] > base[0] and warm[2] < base[2]
    sharp = np.abs(np.diff(IMAGE.astype(float), axis=1)).mean()
    assert np.abs(np.diff(blur(IMAGE, 2.0).astype(float), axis=1)).mean() < 0.6 * sharp
    assert np.array_equal(blur(IMAGE, 0), IMAGE)
    assert resize(IMAGE, 0.5).shape == (60, 80, 3)
    assert resize(IMAGE, 1.5).shape == (180, 240, 3)


def test_chain_applies_in_order_and_noise_is_seeded() -> None:
    chain = parse_transforms(["resize=0.5", "noise=8", "colour_cast=cool"], seed=4)
    out = chain(IMAGE)
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    assert np.array_equal(out, parse_transforms(["resize=0.5", "noise=8", "colour_cast=cool"], seed=4)(IMAGE))
    assert not np.array_equal(out, parse_transforms(["resize=0.5", "noise=8", "colour_cast=cool"], seed=5)(IMAGE))
    assert "color_cast=warm" in repr(parse_transforms(["color_cast=warm"]))
    assert set(NAMED_CASTS) == {"warm", "cool", "green", "magenta"}
    assert np.array_equal(parse_transforms([])(IMAGE), IMAGE)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["brightness"], "name=value"),
        (["brightness="], "name=value"),
        (["brightness=dark"], "needs a number"),
        (["brightness=-0.5"], ">= 0"),
        (["sharpen=2"], "unknown transform"),
        (["blur=nan"], ">= 0"),
        (["resize=0"], "resize scale"),
        (["resize=100"], "resize scale"),
        (["colour_cast=sunset"], "R,G,B gains"),
        (["colour_cast=1,2"], "R,G,B gains"),
        (["colour_cast=1,-1,1"], ">= 0"),
        ("brightness=0.6", "list of"),
    ],
)
def test_bad_specs_raise_clear_errors(specs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_transforms(specs)


def test_rejects_non_rgb_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        brightness(np.zeros((4, 4)), 0.5)
    with pytest.raises(ValueError, match="uint8"):
        parse_transforms(["blur=1"])(IMAGE.astype(np.float32))
