"""Detector drift report: Deepchecks ``ImagePropertyDrift`` of a window's images against the reference.

Two entry points give the same drift scores and the same report:

- :func:`image_drift_report` runs the check on decoded images, as in the chapter's
  listing 11.6, with every parameter of ``ImagePropertyDrift`` at its default (the seven default
  properties, Kolmogorov-Smirnov for numerical properties, ``n_samples=10000``). One setting
  differs: the property list is passed explicitly as Deepchecks' own ``default_image_properties``,
  which makes Deepchecks evaluate each property on every pixel; with ``image_properties=None``
  it estimates brightness, contrast and the colour intensities from 10,000 randomly drawn
  pixels of each image, and such estimates cannot be reproduced from stored properties.
- :func:`image_drift_report_from_properties` feeds the check the properties that the stream
  already computed (the window's Parquet columns, ``producers.image_properties.PROPERTY_NAMES``),
  so no image is decoded again. Each row becomes a 1 x 2 placeholder image that encodes its
  row number, and each property is a Deepchecks property function that looks its value up by
  that number. Deepchecks then runs its unchanged check code (KS, plots, condition) on the
  stored values.

Both write ``image_drift.html`` (self-contained, ``save_as_html(as_widget=False)``) and
``image_drift.json`` (drift score per property, the threshold and the verdict) into ``out_dir``.
The Kolmogorov-Smirnov statistic depends only on the order of the values, so the scale of a
property (brightness on 0-1 or 0-255) does not change its score.

>>> placeholder = row_placeholder(70_000, dataset=1)
>>> placeholder.shape, placeholder_row(placeholder)
((1, 2, 3), (1, 70000))

Reference: Deepchecks ImagePropertyDrift
(https://docs.deepchecks.com/stable/vision/auto_checks/train_test_validation/plot_image_property_drift.html);
Kolmogorov-Smirnov two-sample statistic.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from batch.job_status import JobFailed, JobResult
from producers.image_properties import DEEPCHECKS_NAMES, PROPERTY_NAMES

if TYPE_CHECKING:  # deepchecks is imported when a report runs: its import takes seconds
    from deepchecks.core import CheckResult
    from deepchecks.vision import VisionData

JOB = "image_drift"
HTML_NAME = "image_drift.html"
JSON_NAME = "image_drift.json"
#: Deepchecks' default threshold of ``add_condition_drift_score_less_than``.
DEFAULT_THRESHOLD = 0.2
MIN_IMAGES = 10  # ImagePropertyDrift's default min_samples
_MAX_ROWS = 1 << 24  # three bytes of a placeholder pixel
_SNAKE_OF = dict(zip(DEEPCHECKS_NAMES, PROPERTY_NAMES, strict=True))

os.environ.setdefault("DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY", "True")


def decode_image(data: bytes, name: str = "object") -> np.ndarray:
    """An H x W x 3 uint8 RGB array from encoded image bytes (JPEG, PNG, TIFF, ...).

    >>> ok, png = cv2.imencode(".png", np.full((4, 6, 3), 7, np.uint8))
    >>> decode_image(png.tobytes()).shape
    (4, 6, 3)
    >>> decode_image(b"not an image", "img-1")
    Traceback (most recent call last):
    ...
    batch.job_status.JobFailed: corrupt object img-1: not a decodable image (12 bytes)
    """
    buffer = np.frombuffer(data, np.uint8) if data else np.empty(0, np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise JobFailed(f"corrupt object {name}: not a decodable image ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def row_placeholder(row: int, dataset: int) -> np.ndarray:
    """The 1 x 2 image standing for ``row`` of ``dataset`` (0 reference, 1 window).

    The first pixel is a marker (its 255 also passes Deepchecks' uint8 range check), the second
    holds the row number in three bytes.
    """
    if not 0 <= row < _MAX_ROWS:
        raise ValueError(f"row must be in [0, {_MAX_ROWS}), got {row}")
    if dataset not in (0, 1):
        raise ValueError(f"dataset must be 0 or 1, got {dataset}")
    return np.array([[[255, dataset, 0], [row & 255, (row >> 8) & 255, row >> 16]]], np.uint8)


def placeholder_row(image: np.ndarray) -> tuple[int, int]:
    """``(dataset, row)`` encoded by :func:`row_placeholder`."""
    if image.shape != (1, 2, 3) or int(image[0, 0, 0]) != 255:
        raise ValueError(f"not a row placeholder: shape {image.shape}")
    low, mid, high = (int(v) for v in image[0, 1])
    return int(image[0, 0, 1]), low | (mid << 8) | (high << 16)


def _property_table(frame: pd.DataFrame | None, what: str) -> np.ndarray:
    if frame is None:
        raise JobFailed(f"{what} properties are missing")
    if len(frame) == 0:
        raise JobFailed(f"{what} is empty: no image properties")
    missing = [name for name in PROPERTY_NAMES if name not in frame.columns]
    if missing:
        raise JobFailed(f"{what} properties lack the columns {missing}")
    values = frame[list(PROPERTY_NAMES)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise JobFailed(f"{what} properties have {int(bad.sum())} rows with missing or non-finite values")
    if len(values) >= _MAX_ROWS:
        raise JobFailed(f"{what} has {len(values)} rows, more than {_MAX_ROWS - 1}")
    return values


def _lookup_properties(tables: tuple[np.ndarray, np.ndarray]) -> list[dict[str, Any]]:
    """Deepchecks property functions that read stored values through the placeholders' row numbers."""

    def column_reader(col: int) -> Callable[[list[np.ndarray]], list[float]]:
        def read(batch: list[np.ndarray]) -> list[float]:
            out = []
            for image in batch:
                dataset, row = placeholder_row(image)
                out.append(float(tables[dataset][row, col]))
            return out

        return read

    return [
        {"name": name, "method": column_reader(col), "output_type": "numerical"}
        for col, name in enumerate(DEEPCHECKS_NAMES)
    ]


def _vision_data(images: Sequence[np.ndarray], name: str, batch_size: int) -> VisionData:
    from deepchecks.vision import BatchOutputFormat, VisionData

    batches = [
        BatchOutputFormat(images=list(images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return VisionData(batches, task_type="other", dataset_name=name, reshuffle_data=False)


def _check_images(images: Sequence[np.ndarray] | None, what: str) -> None:
    if images is None:
        raise JobFailed(f"{what} images are missing")
    if len(images) == 0:
        raise JobFailed(f"{what} has no images")
    for index, image in enumerate(images):
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise JobFailed(
                f"{what} image {index} is not an H x W x 3 uint8 array: "
                f"{getattr(image, 'shape', type(image))}"
            )


def _run_check(
    reference: Sequence[np.ndarray],
    window: Sequence[np.ndarray],
    properties: list[dict[str, Any]],
    threshold: float,
    batch_size: int,
) -> CheckResult:
    from deepchecks.core.errors import NotEnoughSamplesError
    from deepchecks.vision.checks import ImagePropertyDrift

    # Progress bars are INFO messages in deepchecks; a batch job logs to files, not to a terminal.
    logging.getLogger("deepchecks").setLevel(logging.WARNING)
    n_ref, n_win = len(reference), len(window)
    if min(n_ref, n_win) < MIN_IMAGES:
        raise JobFailed(
            f"too few images for a drift test: reference {n_ref}, window {n_win}, need {MIN_IMAGES}"
        )
    check = ImagePropertyDrift(image_properties=properties).add_condition_drift_score_less_than(threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deepchecks' deprecation and progress-bar chatter
        try:
            return check.run(
                _vision_data(reference, "Reference", batch_size), _vision_data(window, "Window", batch_size)
            )
        except NotEnoughSamplesError as exc:
            raise JobFailed(f"too few images for a drift test: {exc}") from exc


def _write_report(
    result: CheckResult,
    out_dir: Path,
    *,
    source: str,
    n_reference: int,
    n_window: int,
    threshold: float,
    seconds: float,
) -> JobResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / HTML_NAME, out_dir / JSON_NAME
    html_path.unlink(missing_ok=True)  # save_as_html never overwrites: it would write "name (1).html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = result.save_as_html(str(html_path), as_widget=False)
    if written is not None and Path(written) != html_path:
        raise RuntimeError(f"deepchecks wrote {written} instead of {html_path}")

    properties = {
        _SNAKE_OF[name]: {"name": name, "drift_score": entry["Drift score"], "method": entry["Method"]}
        for name, entry in result.value.items()
    }
    scores = {key: entry["drift_score"] for key, entry in properties.items()}
    drifted = sorted(
        (key for key, score in scores.items() if score is not None and score >= threshold),
        key=lambda key: -scores[key],
    )
    known = [score for score in scores.values() if score is not None]
    report = {
        "job": JOB,
        "check": "ImagePropertyDrift",
        "source": source,
        "n_reference": n_reference,
        "n_window": n_window,
        "threshold": threshold,
        "drift_detected": bool(drifted),
        "drifted_properties": drifted,
        "max_drift_score": max(known) if known else None,
        "properties": properties,
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    metrics = {
        k: report[k]
        for k in (
            "source",
            "n_reference",
            "n_window",
            "threshold",
            "drift_detected",
            "drifted_properties",
            "max_drift_score",
        )
    }
    metrics |= {"scores": scores, "seconds": seconds}
    return JobResult(JOB, outputs={"html": html_path, "json": json_path}, metrics=metrics)


def _check_threshold(threshold: float, batch_size: int) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def image_drift_report(
    reference_images: Sequence[np.ndarray] | None,
    window_images: Sequence[np.ndarray] | None,
    out_dir: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 64,
) -> JobResult:
    """ImagePropertyDrift on decoded H x W x 3 uint8 RGB images; writes the HTML and JSON report.

    Drift is detected when any property's score reaches ``threshold``.
    """
    _check_threshold(threshold, batch_size)
    _check_images(reference_images, "reference")
    _check_images(window_images, "window")
    from deepchecks.vision.utils.image_properties import default_image_properties

    start = time.perf_counter()
    result = _run_check(
        reference_images, window_images, list(default_image_properties), threshold, batch_size
    )
    return _write_report(
        result,
        out_dir,
        source="images",
        n_reference=len(reference_images),
        n_window=len(window_images),
        threshold=threshold,
        seconds=time.perf_counter() - start,
    )


def image_drift_report_from_properties(
    reference: pd.DataFrame | None,
    window: pd.DataFrame | None,
    out_dir: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 1024,
) -> JobResult:
    """The same report from stored properties: DataFrames with the seven ``PROPERTY_NAMES`` columns."""
    _check_threshold(threshold, batch_size)
    tables = (_property_table(reference, "reference"), _property_table(window, "window"))
    start = time.perf_counter()
    placeholders = [
        [row_placeholder(row, dataset) for row in range(len(table))] for dataset, table in enumerate(tables)
    ]
    result = _run_check(placeholders[0], placeholders[1], _lookup_properties(tables), threshold, batch_size)
    return _write_report(
        result,
        out_dir,
        source="properties",
        n_reference=len(tables[0]),
        n_window=len(tables[1]),
        threshold=threshold,
        seconds=time.perf_counter() - start,
    )


def decode_images(objects: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """Decode every object (name -> bytes) of a window; a corrupt one fails the job with its name."""
    return {name: decode_image(data, name) for name, data in objects.items()}
