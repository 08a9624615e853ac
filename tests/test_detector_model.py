"""The committed detector finds the card in a generated scene, on both backends."""

from __future__ import annotations

import numpy as np
import pytest

from driftstream.offline_env import apply_offline_env
from driftstream.settings import Settings, get_settings
from producers.idcard_scenes import generate_scene
from serving.detector_model import (
    CATEGORY,
    MIN_SIDE,
    MODELS_DIR,
    DetectorModel,
    decode_yolo_output,
    letterbox,
    non_max_suppression,
    read_model_card,
    serving_model,
    validate_image_size,
)

SCENE_SEEDS = (101, 202, 303)


def _iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def onnx_model() -> DetectorModel:
    return DetectorModel(backend="onnx")


def test_committed_files_are_small_and_described() -> None:
    card = read_model_card()
    sizes = {name: (MODELS_DIR / card[name]).stat().st_size for name in ("torch_file", "onnx_file")}
    assert sum(sizes.values()) < 15e6
    assert card["metrics"]["heldout_map50_torch"] >= 0.9 and card["metrics"]["heldout_map50_onnx"] >= 0.9
    assert card["serving_backend"] in ("onnx", "torch") and card["category"] == CATEGORY
    assert "python -m serving.detector_training" in (MODELS_DIR / "README.md").read_text()


def test_onnx_backend_finds_the_card(onnx_model: DetectorModel) -> None:
    assert onnx_model.backend == "onnx" and onnx_model.model_version == read_model_card()["model_version"]
    for seed in SCENE_SEEDS:
        scene = generate_scene(seed, size=(640, 480), n_cards=1)
        detections = onnx_model.predict(scene.image)
        assert detections, f"no card found in scene {seed}"
        best = detections[0]
        assert best["category"] == CATEGORY and 0.25 <= best["confidence"] <= 1
        assert _iou(best["bbox"], scene.boxes[0].tolist()) > 0.7
        assert [d["confidence"] for d in detections] == sorted((d["confidence"] for d in detections), reverse=True)


def test_no_card_no_confident_detection(onnx_model: DetectorModel) -> None:
    flat = np.full((480, 640, 3), 90, np.uint8)
    assert all(d["confidence"] < 0.5 for d in onnx_model.predict(flat))


def test_torch_backend_agrees_with_onnx(onnx_model: DetectorModel) -> None:
    apply_offline_env(get_settings().abs_state_dir)  # before Ultralytics is imported
    torch_model = DetectorModel(backend="torch", num_threads=2)
    scene = generate_scene(SCENE_SEEDS[0], size=(640, 480), n_cards=1)
    from_torch, from_onnx = torch_model.predict(scene.image), onnx_model.predict(scene.image)
    assert from_torch and from_onnx
    assert _iou(from_torch[0]["bbox"], from_onnx[0]["bbox"]) > 0.9
    assert from_torch[0]["confidence"] == pytest.approx(from_onnx[0]["confidence"], abs=0.1)


def test_small_or_malformed_images_are_rejected(onnx_model: DetectorModel) -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_SIDE}"):
        onnx_model.predict(np.zeros((MIN_SIDE - 1, 200, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        validate_image_size(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        validate_image_size(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="backend"):
        DetectorModel(backend="tensorrt")  # type: ignore[arg-type]


def test_letterbox_and_decoding_map_back_to_image_pixels() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    padded, scale, pad = letterbox(image, 320)
    assert padded.shape == (320, 320, 3) and scale == 1.6 and pad == (0, 80)
    assert padded[0, 0, 0] == 114 and padded[160, 160, 0] == 0
    # Two overlapping candidates and one separate one, in letterboxed coordinates (cx, cy, w, h, score).
    raw = np.array([[[100, 104, 310], [120, 122, 200], [40, 40, 30], [32, 30, 30], [0.9, 0.6, 0.8]]], np.float32)
    found = decode_yolo_output(raw, conf=0.25, iou=0.5, scale=scale, pad=pad, shape=(100, 200))
    assert [round(d["confidence"], 2) for d in found] == [0.9, 0.8]
    assert found[0]["bbox"] == pytest.approx([(100 - 20) / 1.6, (120 - 16 - 80) / 1.6, 120 / 1.6, (136 - 80) / 1.6])
    assert found[1]["bbox"][2] == 200  # clipped to the image


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert non_max_suppression(boxes, np.array([0.5, 0.9, 0.7]), iou=0.5, max_keep=10).tolist() == [1, 2]
    assert non_max_suppression(boxes, np.array([0.5, 0.9, 0.7]), iou=0.5, max_keep=1).tolist() == [1]


def test_the_served_model_uses_the_configured_inference_threads() -> None:
    model = serving_model(Settings(detector_inference_threads=3))
    assert model.num_threads == 3
    if model.backend == "onnx":
        assert model._session.get_session_options().intra_op_num_threads == 3
