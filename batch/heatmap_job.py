"""Heatmap job: EigenCAM overlays for a window's least confident images and a random sample.

The job picks the ``n_lowest`` images with the lowest archived detection confidence (the
highest-confidence detection of each image; an image without detections counts as 0) and
``n_random`` more at random, runs the detector once per image with :class:`EigenCAM` hooked
into it, and writes for each one a PNG of the heatmap blended over the image with the
detections of that same forward pass drawn on top. When image drift was detected it also
writes ``drift_comparison.png``: reference images (left) beside the window's least confident
images (right), each with its heatmap, so a reader sees whether the model looks elsewhere on
the drifted data. ``heatmaps.json`` lists every overlay with why it was chosen, and
``heatmaps.html`` shows them (relative links, so it works wherever the folder is copied).

>>> heat = np.zeros((2, 2), np.float32)
>>> heat[0, 0] = 1.0
>>> out = overlay_heatmap(np.full((2, 2, 3), 200, np.uint8), heat)
>>> out[0, 0].tolist(), out[1, 1].tolist()  # red-brown where hot, blue-tinted where cold
([164, 100, 100], [100, 100, 164])

Reference: M. B. Muhammad and M. Yeasin, "Eigen-CAM", IJCNN 2020; section 11.3.1 of the
chapter (listing 11.7).
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from batch.eigencam import EigenCAM
from batch.job_status import JobFailed, JobResult
from serving.detector_render import draw_detections

JOB = "heatmaps"
HEATMAP_DIR = "heatmaps"
INDEX_NAME = "heatmaps.json"
GALLERY_NAME = "heatmaps.html"
COMPARISON_NAME = "drift_comparison.png"
CELL_HEIGHT = 240


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``alpha`` x jet-coloured heatmap + (1 - alpha) x image, as H x W x 3 uint8 RGB."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image shape {image.shape[:2]}")
    levels = np.uint8(np.clip(heatmap, 0, 1) * 255)
    colour = cv2.applyColorMap(levels, cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
    blended = alpha * colour + (1 - alpha) * image.astype(np.float32)
    return blended.round().astype(np.uint8)


def detection_model_of(detector: Any) -> Any:
    """The torch module that ``detector.predict`` runs, for ``DetectorModel(backend="torch")``.

    Ultralytics' predictor runs a (fused) deep copy of ``YOLO.model``, made on the first
    prediction and again whenever a call changes a setup argument such as ``device``; hooks
    must sit on the copy that ``detector.predict`` keeps using, so one prediction runs first.
    """
    if getattr(detector, "backend", "torch") != "torch":
        raise JobFailed(f"EigenCAM needs the detector's torch backend, got backend {detector.backend!r}")
    yolo = getattr(detector, "yolo", None) or getattr(detector, "_yolo", None)
    if yolo is None or not hasattr(yolo, "model"):
        raise JobFailed("the detector exposes no Ultralytics model to hook")
    detector.predict(np.zeros((64, 64, 3), np.uint8))
    runner = yolo.predictor.model  # AutoBackend
    backend = getattr(runner, "backend", None)  # Ultralytics >= 8.4 keeps the module in a backend object
    module = getattr(backend, "model", None) if backend is not None else getattr(runner, "model", None)
    if module is None or not hasattr(module, "register_forward_hook"):
        raise JobFailed("could not find the torch module the detector's predictor runs")
    return module


def select_images(
    confidences: Mapping[str, float], image_ids: Sequence[str], n_lowest: int, n_random: int, seed: int
) -> list[tuple[str, str]]:
    """``(image_id, why)`` pairs: the ``n_lowest`` least confident ids, then ``n_random`` others.

    >>> select_images({"a": 0.9, "b": 0.2, "c": 0.5}, ["a", "b", "c", "d"], 2, 1, seed=0)
    [('d', 'lowest_confidence'), ('b', 'lowest_confidence'), ('c', 'random')]
    """
    if n_lowest < 0 or n_random < 0:
        raise ValueError(f"n_lowest and n_random must be >= 0, got {n_lowest} and {n_random}")
    ordered = sorted(image_ids, key=lambda key: (float(confidences.get(key, 0.0)), key))
    lowest = ordered[:n_lowest]
    rest = sorted(ordered[n_lowest:])
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rest), size=min(n_random, len(rest)), replace=False) if rest else []
    return [(key, "lowest_confidence") for key in lowest] + [(rest[int(k)], "random") for k in sorted(picked)]


def _file_name(index: int, image_id: str) -> str:
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9._-]', '_', image_id)[:80]}.png"


def _labelled(image: np.ndarray, label: str, width: int) -> np.ndarray:
    """``image`` scaled to CELL_HEIGHT, padded to ``width``, under a caption strip."""
    h, w = image.shape[:2]
    scaled = cv2.resize(
        image, (max(1, round(w * CELL_HEIGHT / h)), CELL_HEIGHT), interpolation=cv2.INTER_AREA
    )
    cell = np.full((CELL_HEIGHT + 24, width, 3), 255, np.uint8)
    cell[24:, : min(width, scaled.shape[1])] = scaled[:, :width]
    # OpenCV's built-in Hershey font: no font file is read or downloaded.
    cv2.putText(cell, label[:60], (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return cell


def side_by_side(pairs: Sequence[tuple[tuple[str, np.ndarray], tuple[str, np.ndarray]]]) -> np.ndarray:
    """A grid with one row per pair: (label, left image) beside (label, right image)."""
    if not pairs:
        raise ValueError("pairs is empty")
    width = max(round(img.shape[1] * CELL_HEIGHT / img.shape[0]) for pair in pairs for _, img in pair)
    gap = np.full((CELL_HEIGHT + 24, 8, 3), 255, np.uint8)
    rows = [
        np.hstack([_labelled(left[1], left[0], width), gap, _labelled(right[1], right[0], width)])
        for left, right in pairs
    ]
    return np.vstack(rows)


def _gallery(index: list[dict[str, Any]], comparison: str | None) -> str:
    esc = html.escape
    cells = "".join(
        f'<figure><img src="{esc(e["file"], quote=True)}" alt="{esc(e["image_id"], quote=True)}" width="320">'
        f"<figcaption>{esc(e['image_id'])}: {esc(e['selected_as'].replace('_', ' '))}, archived confidence "
        f"{e['archived_confidence']:.2f}, {len(e['detections'])} detections</figcaption></figure>"
        for e in index
    )
    top = (
        f'<h2>Reference (left) and drifted window (right)</h2><img src="{esc(comparison, quote=True)}" '
        'alt="reference versus window heatmaps">'
        if comparison
        else ""
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>EigenCAM heatmaps</title>"
        "<style>figure{display:inline-block;margin:6px;width:320px;font:12px sans-serif}</style></head><body>"
        f"<h1>EigenCAM heatmaps</h1>{top}<h2>Window images</h2>{cells}</body></html>\n"
    )


def _check_images(images: Mapping[str, np.ndarray], what: str) -> None:
    for key, image in images.items():
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise JobFailed(f"{what} image {key} is not an H x W x 3 uint8 array")


def _explain(cam: EigenCAM, detector: Any, image_id: str, image: np.ndarray) -> tuple[list[dict], np.ndarray]:
    try:
        detections, heatmap = cam(detector.predict, image)
    except ValueError as exc:  # the detector rejects the image (size, dtype)
        raise JobFailed(f"image {image_id}: {exc}") from exc
    overlay = np.asarray(draw_detections(Image.fromarray(overlay_heatmap(image, heatmap)), detections))
    return detections, overlay


def heatmap_job(
    window_images: Mapping[str, np.ndarray],
    confidences: Mapping[str, float],
    detector: Any,
    out_dir: Path,
    *,
    n_lowest: int = 8,
    n_random: int = 8,
    reference_images: Mapping[str, np.ndarray] | None = None,
    drift_detected: bool = False,
    n_pairs: int = 4,
    seed: int = 0,
) -> JobResult:
    """Write the overlays, their index and (on drift) the reference-versus-window comparison.

    ``window_images``/``reference_images`` map image ids to H x W x 3 uint8 RGB arrays;
    ``confidences`` maps window image ids to their archived top confidence; ``detector`` has a
    ``predict(image)`` that returns detection dicts and runs an Ultralytics model (see
    :func:`detection_model_of`).
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if not window_images:
        raise JobFailed("window has no images to explain")
    _check_images(window_images, "window")
    if drift_detected:
        if not reference_images:
            raise JobFailed("drift was detected but the reference images are missing for the comparison")
        _check_images(reference_images, "reference")
    chosen = select_images(confidences, list(window_images), n_lowest, n_random, seed)
    if not chosen:
        raise JobFailed("no image selected: n_lowest and n_random are both 0")

    out_dir = Path(out_dir)
    heat_dir = out_dir / HEATMAP_DIR
    heat_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    index: list[dict[str, Any]] = []
    overlays: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    with EigenCAM(detection_model_of(detector)) as cam:
        for k, (image_id, why) in enumerate(chosen):
            detections, overlay = _explain(cam, detector, image_id, window_images[image_id])
            path = heat_dir / _file_name(k, image_id)
            Image.fromarray(overlay).save(path, format="PNG")
            overlays[image_id] = overlay
            outputs[f"heatmap:{image_id}"] = path
            index.append(
                {
                    "image_id": image_id,
                    "selected_as": why,
                    "archived_confidence": float(confidences.get(image_id, 0.0)),
                    "detections": detections,
                    "file": f"{HEATMAP_DIR}/{path.name}",
                }
            )
        seconds = time.perf_counter() - start
        comparison = None
        if drift_detected and reference_images:
            rng = np.random.default_rng(seed + 1)
            ref_ids = sorted(reference_images)
            ref_pick = [
                ref_ids[int(k)] for k in rng.choice(len(ref_ids), min(n_pairs, len(ref_ids)), replace=False)
            ]
            window_pick = [key for key, _ in chosen][: len(ref_pick)]
            pairs = []
            for ref_id, win_id in zip(ref_pick, window_pick, strict=False):
                _, ref_overlay = _explain(cam, detector, ref_id, reference_images[ref_id])
                conf = float(confidences.get(win_id, 0.0))
                pairs.append(
                    (
                        (f"reference {ref_id}", ref_overlay),
                        (f"window {win_id} conf {conf:.2f}", overlays[win_id]),
                    )
                )
            comparison = out_dir / COMPARISON_NAME
            Image.fromarray(side_by_side(pairs)).save(comparison, format="PNG")
            outputs["drift_comparison"] = comparison

    index_path, gallery_path = out_dir / INDEX_NAME, out_dir / GALLERY_NAME
    index_path.write_text(
        json.dumps(
            {"job": JOB, "images": index, "drift_comparison": COMPARISON_NAME if comparison else None},
            indent=2,
        )
        + "\n"
    )
    gallery_path.write_text(_gallery(index, COMPARISON_NAME if comparison else None))
    outputs = {"html": gallery_path, "index": index_path, **outputs}
    metrics = {
        "n_heatmaps": len(index),
        "n_lowest_confidence": sum(entry["selected_as"] == "lowest_confidence" for entry in index),
        "n_random": sum(entry["selected_as"] == "random" for entry in index),
        "ms_per_image": 1000 * seconds / len(index),
        "drift_comparison": comparison is not None,
    }
    return JobResult(JOB, outputs=outputs, metrics=metrics)
