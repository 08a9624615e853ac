"""Detector drift report: the image path and the stored-properties path give the same Deepchecks scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from batch.image_drift_report import (
    HTML_NAME,
    JSON_NAME,
    decode_images,
    image_drift_report,
    image_drift_report_from_properties,
)
from batch.job_status import JobFailed
from driftstream.offline_env import apply_offline_env
from driftstream.settings import get_settings
from producers.idcard_scenes import generate_scene
from producers.image_properties import PROPERTY_NAMES, compute_properties_batch
from producers.image_transforms import brightness

SIZES = [(160, 120), (120, 160), (160, 160), (192, 128)]
N = 60


@pytest.fixture(scope="module", autouse=True)
def offline() -> None:
    apply_offline_env(get_settings().abs_state_dir)


@pytest.fixture(scope="module")
def images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    reference = [generate_scene(i, size=SIZES[i % 4]).image for i in range(N)]
    # The chapter's drift (listing 11.5): the same kind of scenes, darkened to 60 %.
    window = [brightness(generate_scene(1000 + i, size=SIZES[i % 4]).image, 0.6) for i in range(N)]
    return reference, window


@pytest.fixture(scope="module")
def reports(
    images: tuple[list[np.ndarray], list[np.ndarray]], tmp_path_factory: pytest.TempPathFactory
) -> dict:
    reference, window = images
    out = tmp_path_factory.mktemp("image-drift")
    from_images = image_drift_report(reference, window, out / "images")
    props = pd.DataFrame(compute_properties_batch(reference)), pd.DataFrame(compute_properties_batch(window))
    from_props = image_drift_report_from_properties(*props, out / "properties")
    return {"images": from_images, "properties": from_props, "props": props, "out": out}


def test_both_paths_give_the_same_scores(reports: dict) -> None:
    a, b = reports["images"].metrics["scores"], reports["properties"].metrics["scores"]
    assert set(a) == set(PROPERTY_NAMES)
    assert a == b  # exactly: KS depends only on the order of the values, which both paths share


def test_the_darkened_window_drifts_in_brightness_only_where_expected(reports: dict) -> None:
    result = reports["properties"]
    scores = result.metrics["scores"]
    assert result.metrics["drift_detected"] and "brightness" in result.metrics["drifted_properties"]
    assert scores["brightness"] > 0.4 and scores["rms_contrast"] > 0.4
    assert scores["area"] == 0.0 and scores["aspect_ratio"] == 0.0  # sizes come from the same mix
    assert result.metrics["max_drift_score"] == max(scores.values())


def test_report_files(reports: dict) -> None:
    result = reports["images"]
    html = result.outputs["html"].read_text()
    assert result.outputs["html"].name == HTML_NAME and "Image Property Drift" in html
    assert "Brightness" in html and "Plotly" in html
    assert not re.search(r"<script[^>]*\ssrc=", html)  # every script is inline: the page works offline
    assert not re.search(r"<link[^>]*href=[\"']https?:", html)
    report = json.loads(result.outputs["json"].read_text())
    assert result.outputs["json"].name == JSON_NAME and report["source"] == "images"
    assert report["properties"]["brightness"]["method"] == "Kolmogorov-Smirnov"
    assert report["properties"]["brightness"]["drift_score"] == result.metrics["scores"]["brightness"]
    assert report["n_reference"] == report["n_window"] == N


def test_rerun_overwrites_the_html(reports: dict) -> None:
    reference, window = reports["props"]
    out = reports["out"] / "properties"
    before = sorted(p.name for p in out.iterdir())
    result = image_drift_report_from_properties(reference, window.iloc[: N // 2], out)
    assert sorted(p.name for p in out.iterdir()) == before == [HTML_NAME, JSON_NAME]
    assert json.loads(result.outputs["json"].read_text())["n_window"] == N // 2


def test_bad_or_missing_data_fails_clearly(
    reports: dict, images: tuple[list[np.ndarray], list[np.ndarray]], tmp_path: Path
) -> None:
    reference, window = reports["props"]
    with pytest.raises(JobFailed, match="window is empty"):
        image_drift_report_from_properties(reference, window.iloc[:0], tmp_path)
    with pytest.raises(JobFailed, match="reference properties are missing"):
        image_drift_report_from_properties(None, window, tmp_path)
    with pytest.raises(JobFailed, match="lack the columns"):
        image_drift_report_from_properties(reference, window.drop(columns=["brightness"]), tmp_path)
    broken = window.copy()
    broken.loc[3, "area"] = np.nan
    with pytest.raises(JobFailed, match="1 rows with missing"):
        image_drift_report_from_properties(reference, broken, tmp_path)
    with pytest.raises(JobFailed, match="too few images"):
        image_drift_report_from_properties(reference, window.iloc[:5], tmp_path)
    with pytest.raises(JobFailed, match="window has no images"):
        image_drift_report(images[0], [], tmp_path)
    with pytest.raises(JobFailed, match="reference images are missing"):
        image_drift_report(None, images[1], tmp_path)
    assert not list(tmp_path.iterdir())  # a failed job leaves nothing half-written


def test_decode_images() -> None:
    image = generate_scene(3, size=(96, 64)).image
    png = cv2.imencode(".png", image[..., ::-1])[1].tobytes()
    decoded = decode_images({"a.png": png})
    assert np.array_equal(decoded["a.png"], image)
    with pytest.raises(JobFailed, match="corrupt object b.jpg"):
        decode_images({"a.png": png, "b.jpg": png[:40]})
    with pytest.raises(JobFailed, match="corrupt object c"):
        decode_images({"c": b""})
