"""Image shifts for drift experiments, on H x W x 3 uint8 RGB arrays, and a parser for them.

Brightness, contrast and blur follow Pillow's ``ImageEnhance`` and ``ImageFilter`` exactly,
so ``brightness=0.6`` is the drift of the chapter's listing 11.5
(``ImageEnhance.Brightness(img).enhance(0.6)``). The only random transform, ``noise``,
draws from the generator that ``parse_transforms`` seeds, so a run is reproducible.

Spec syntax: ``name=value`` with

- ``brightness=F`` (F >= 0; 1 keeps the image, 0 is black)
- ``contrast=F`` (F >= 0; 0 is a flat gray image at the mean luminance)
- ``colour_cast=R,G,B`` gains, or a named cast: warm, cool, green, magenta
- ``blur=R`` Gaussian blur radius in pixels (R >= 0)
- ``resize=S`` scale factor (0 < S <= 8)
- ``noise=SIGMA`` Gaussian sensor noise, standard deviation in gray levels

>>> img = np.full((2, 2, 3), 100, np.uint8)
>>> shift = parse_transforms(["brightness=0.6", "colour_cast=1,1,0.5"])
>>> shift(img)[0, 0].tolist()
[60, 60, 30]
>>> shift
TransformChain(['brightness=0.6', 'colour_cast=1,1,0.5'], seed=0)

Reference: Pillow ImageEnhance (https://pillow.readthedocs.io/en/stable/reference/ImageEnhance.html).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

NAMED_CASTS: dict[str, tuple[float, float, float]] = {
    "warm": (1.12, 1.0, 0.82),
    "cool": (0.85, 0.97, 1.15),
    "green": (0.88, 1.12, 0.88),
    "magenta": (1.1, 0.85, 1.1),
}
MAX_SCALE = 8.0


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {getattr(image, 'shape', type(image))}")


def _non_negative(name: str, value: float) -> float:
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Pillow's ``ImageEnhance.Brightness``: every channel times ``factor``, clipped."""
    _check_image(image)
    factor = _non_negative("brightness factor", factor)
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(image)).enhance(factor))


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Pillow's ``ImageEnhance.Contrast``: blend with the image's mean gray level."""
    _check_image(image)
    factor = _non_negative("contrast factor", factor)
    return np.asarray(ImageEnhance.Contrast(Image.fromarray(image)).enhance(factor))


def colour_cast(image: np.ndarray, gains: tuple[float, float, float] | str) -> np.ndarray:
    """Per-channel gains (R, G, B), or one of NAMED_CASTS; rounded and clipped to 0-255."""
    _check_image(image)
    if isinstance(gains, str):
        if gains not in NAMED_CASTS:
            raise ValueError(f"unknown colour cast {gains!r}; named casts: {sorted(NAMED_CASTS)}")
        gains = NAMED_CASTS[gains]
    if len(gains) != 3:
        raise ValueError(f"colour cast needs 3 gains (R, G, B), got {len(gains)}")
    g = np.array([_non_negative("colour gain", v) for v in gains], np.float32)
    return (image.astype(np.float32) * g).round().clip(0, 255).astype(np.uint8)


def blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Pillow's Gaussian blur with the given radius (standard deviation) in pixels."""
    _check_image(image)
    radius = _non_negative("blur radius", radius)
    if radius == 0:
        return image.copy()
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Bilinear resize of both sides by ``scale`` (at least 1 pixel a side)."""
    _check_image(image)
    if not np.isfinite(scale) or not 0 < scale <= MAX_SCALE:
        raise ValueError(f"resize scale must be in (0, {MAX_SCALE}], got {scale}")
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise with standard deviation ``sigma`` gray levels, rounded and clipped."""
    _check_image(image)
    sigma = _non_negative("noise sigma", sigma)
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return noisy.round().clip(0, 255).astype(np.uint8)


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} needs a number, got {text!r}") from None


def _parse_one(spec: str, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    name, sep, value = spec.partition("=")
    name, value = name.strip().lower().replace("color", "colour"), value.strip()
    if not sep or not value:
        raise ValueError(f"transform spec must look like name=value, got {spec!r}")
    if name == "colour_cast":
        cast: tuple[float, float, float] | str
        if value in NAMED_CASTS:
            cast = value
        else:
            parts = value.split(",")
            if len(parts) != 3:
                raise ValueError(f"colour_cast needs R,G,B gains or one of {sorted(NAMED_CASTS)}, got {value!r}")
            r, g, b = (_float("colour_cast", p) for p in parts)
            cast = (r, g, b)
        colour_cast(np.zeros((1, 1, 3), np.uint8), cast)  # validate now, not on the first image
        return lambda image: colour_cast(image, cast)
    simple: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
        "brightness": brightness,
        "contrast": contrast,
        "blur": blur,
        "resize": resize,
        "noise": lambda image, sigma: noise(image, sigma, rng),
    }
    if name not in simple:
        raise ValueError(f"unknown transform {name!r}; known: {sorted([*simple, 'colour_cast'])}")
    number = _float(name, value)
    fn = simple[name]
    fn(np.zeros((1, 1, 3), np.uint8), number)  # validate the parameter now
    return lambda image: fn(image, number)


class TransformChain:
    """Transforms applied left to right; callable on an (H, W, 3) uint8 array."""

    def __init__(self, specs: Sequence[str], seed: int = 0) -> None:
        if isinstance(specs, str):
            raise ValueError("specs must be a list of 'name=value' strings, not a single string")
        self.specs = [str(s) for s in specs]
        self.seed = seed
        rng = np.random.default_rng(seed)
        self._steps = [_parse_one(spec, rng) for spec in self.specs]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
        for step in self._steps:
            image = step(image)
        return image

    def __repr__(self) -> str:
        return f"TransformChain({self.specs}, seed={self.seed})"


def parse_transforms(specs: Sequence[str], seed: int = 0) -> TransformChain:
    """Parse ``["brightness=0.6", "blur=1.5"]`` into one callable; ValueError on a bad spec."""
    return TransformChain(specs, seed)
