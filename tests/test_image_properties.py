"""compute_properties agrees with deepchecks' own property functions (deepchecks 0.19.1)."""

from __future__ import annotations

import functools
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from producers.idcard_scenes import generate_scene
from producers.image_properties import (
    DEEPCHECKS_NAMES,
    PROPERTY_NAMES,
    compute_properties,
    compute_properties_batch,
)
from producers.image_transforms import brightness


def _deepchecks_properties() -> ModuleType:
    """deepchecks' own property module, loaded from the installed package by file.

    Importing the ``deepchecks`` package takes tens of seconds and ``deepchecks.vision`` needs its
    optional extras; the property module itself only needs numpy, OpenCV and scikit-image.
    """
    spec = importlib.util.find_spec("deepchecks")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, "deepchecks is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "vision" / "utils" / "image_properties.py"
    module_spec = importlib.util.spec_from_file_location("deepchecks_image_properties", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


DP = _deepchecks_properties()
FUNCTIONS = dict(zip(DEEPCHECKS_NAMES, (p["method"] for p in DP.default_image_properties), strict=True))


@functools.cache
def _varied_images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    gradient = np.zeros((97, 131, 3), np.uint8)
    gradient[..., 0] = np.linspace(0, 255, 131, dtype=np.uint8)
    gradient[..., 2] = np.linspace(255, 0, 97, dtype=np.uint8)[:, None]
    half_black = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    half_black[:32] = 0
    scene = generate_scene(5).image
    return [
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        rng.integers(0, 40, (33, 17, 3), dtype=np.uint8),  # dark, odd shape
        np.zeros((10, 20, 3), np.uint8),  # all black: relative intensities are 0
        np.full((7, 5, 3), 255, np.uint8),
        np.full((1, 1, 3), (200, 10, 0), np.uint8),
        gradient,
        half_black,
        scene,
        brightness(scene, 0.6),
        scene[::2, ::-3],  # non-contiguous view
    ]


@pytest.mark.parametrize("index", range(10))
def test_matches_deepchecks_property_functions(index: int) -> None:
    image = _varied_images()[index]
    ours = compute_properties(image)
    assert tuple(ours) == PROPERTY_NAMES
    for name, display in zip(PROPERTY_NAMES, DEEPCHECKS_NAMES, strict=True):
        expected = float(FUNCTIONS[display]([image])[0])
        assert ours[name] == pytest.approx(expected, abs=1e-6, rel=0), (name, ours[name], expected)


def test_matches_deepchecks_on_small_and_thin_shapes() -> None:
    rng = np.random.default_rng(2)
    for h, w in [(1, 1), (1, 2), (2, 1), (3, 4), (4, 1), (1, 4), (7, 9), (8, 8), (1, 100), (100, 1), (9, 13)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[0, 0] = 0
        ours = compute_properties(image)
        for name, display in zip(PROPERTY_NAMES, DEEPCHECKS_NAMES, strict=True):
            assert ours[name] == pytest.approx(float(FUNCTIONS[display]([image])[0]), abs=1e-6, rel=0), (h, w, name)


def test_matches_drift_check_fast_path_without_sampling() -> None:
    # ImagePropertyDrift's default path samples 10,000 pixels; below that it uses every pixel
    # and reports brightness and contrast on the 0-255 scale.
    image = np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    fast = DP.calc_default_image_properties([image])
    ours = compute_properties(image)
    scale = {"brightness": 255.0, "rms_contrast": 255.0}
    for name, display in zip(PROPERTY_NAMES, DEEPCHECKS_NAMES, strict=True):
        assert ours[name] * scale.get(name, 1.0) == pytest.approx(float(fast[display][0]), rel=1e-7)


def test_batch_is_columns_of_single_results() -> None:
    images = _varied_images()[:4]
    batch = compute_properties_batch(images)
    assert set(batch) == set(PROPERTY_NAMES)
    for i, image in enumerate(images):
        for name, value in compute_properties(image).items():
            assert batch[name][i] == value
    assert all(v.shape == (0,) for v in compute_properties_batch([]).values())


def test_reused_buffers_do_not_leak_between_shapes_or_threads() -> None:
    images = _varied_images()
    expected = [compute_properties(image) for image in images]
    assert [compute_properties(image) for image in reversed(images)] == expected[::-1]
    big = np.random.default_rng(5).integers(0, 256, (1100, 1000, 3), dtype=np.uint8)  # above the buffer cap
    assert compute_properties(big)["area"] == 1.1e6
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(compute_properties, images * 3)) == expected * 3


def test_darker_images_have_lower_brightness() -> None:
    image = generate_scene(8).image
    assert compute_properties(brightness(image, 0.6))["brightness"] < 0.7 * compute_properties(image)["brightness"]


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
     np.zeros((0, 4, 3), np.uint8), [[0, 0, 0]]],
)
def test_rejects_anything_but_rgb_uint8(bad: object) -> None:
    with pytest.raises(ValueError, match="image must"):
        compute_properties(bad)  # type: ignore[arg-type]
