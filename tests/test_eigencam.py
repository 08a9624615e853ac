"""EigenCAM maps against an independent principal-component computation, hooks, and the heatmap job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batch.eigencam import EigenCAM, combine_layer_maps, eigencam_projection, letterbox_region
from batch.heatmap_job import (
    COMPARISON_NAME,
    INDEX_NAME,
    detection_model_of,
    heatmap_job,
    overlay_heatmap,
    select_images,
)
from batch.job_status import JobFailed
from driftstream.offline_env import apply_offline_env
from driftstream.settings import get_settings

IMGSZ = 160


def reference_projection(activations: np.ndarray) -> np.ndarray:
    """Projection on the first right singular vector of a thin SVD, sign by total activation."""
    c, h, w = activations.shape
    x = activations.reshape(c, -1).T.astype(np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    projection = x @ vt[0]
    if projection @ x.sum(axis=1) < 0:
        projection = -projection
    return projection.reshape(h, w)


def low_rank_activations(seed: int, c: int = 24, h: int = 12, w: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((yy - 4) ** 2 + (xx - 6) ** 2) / 6.0)
    ramp = xx / w
    a = rng.uniform(0.5, 2.0, (c, 1, 1)) * blob + rng.normal(0, 0.3, (c, 1, 1)) * ramp
    return (a + rng.normal(0, 0.02, (c, h, w))).astype(np.float32)


@pytest.mark.parametrize(("seed", "channels"), [(0, 24), (1, 200), (2, 120)])
def test_projection_matches_thin_svd(seed: int, channels: int) -> None:
    # 24 channels < 120 positions uses X^T X, 200 > 120 uses X X^T; 120 = 120 the latter too.
    a = low_rank_activations(seed, c=channels)
    np.testing.assert_allclose(eigencam_projection(a), reference_projection(a), rtol=1e-5, atol=1e-5)


def test_projection_matches_full_svd_up_to_sign_and_finds_the_blob() -> None:
    a = low_rank_activations(3)
    x = a.reshape(a.shape[0], -1).T.astype(np.float64)
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=True)  # the grad-cam package's computation
    full = (x @ vt[0]).reshape(a.shape[1:])
    cam = eigencam_projection(a)
    assert abs(np.corrcoef(cam.ravel(), full.ravel())[0, 1]) > 0.99999
    assert np.unravel_index(cam.argmax(), cam.shape) == (4, 6)  # the hot spot is hot, whatever SVD's sign
    assert np.unravel_index(eigencam_projection(a * 3 + 1).argmax(), cam.shape) == (4, 6)


def test_constant_and_bad_activations() -> None:
    assert not eigencam_projection(np.ones((4, 3, 3), np.float32)).any()
    with pytest.raises(ValueError, match="C x h x w"):
        eigencam_projection(np.ones((3, 3), np.float32))


def test_letterbox_region_matches_the_detector_letterbox() -> None:
    import cv2

    from serving.detector_model import letterbox

    for h, w in [(480, 640), (640, 480), (480, 720), (300, 301), (384, 512)]:
        padded, scale, (left, top) = letterbox(np.zeros((h, w, 3), np.uint8), 320)
        assert letterbox_region((h, w), padded.shape[:2]) == (top, left, round(h * scale), round(w * scale))
    # A map that is hot only on the image area stays hot everywhere once the padding is cropped.
    image_shape, net = (120, 200), (96, 160)
    top, left, nh, nw = letterbox_region(image_shape, net)
    act = np.zeros((2, *net), np.float32)
    act[:, top : top + nh, left : left + nw] = 1.0
    act[1] += cv2.GaussianBlur(np.random.default_rng(0).random(net).astype(np.float32), (0, 0), 3) * 0.01
    heat = combine_layer_maps([act], image_shape, net)
    assert heat.shape == image_shape and heat.min() >= 0 and heat.max() <= 1


class TinyDetector:
    """An untrained YOLOv8n behind a ``predict`` like ``serving.detector_model.DetectorModel``'s."""

    backend = "torch"

    def __init__(self) -> None:
        import torch
        from ultralytics import YOLO

        torch.manual_seed(0)
        self.yolo = YOLO("yolov8n.yaml", task="detect")
        self.calls = 0

    def predict(self, image: np.ndarray) -> list[dict]:
        self.calls += 1
        result = self.yolo.predict(
            np.ascontiguousarray(image[..., ::-1]),
            imgsz=IMGSZ,
            conf=0.0001,
            max_det=3,
            device="cpu",
            verbose=False,
        )[0]
        return [
            {"bbox": box, "category": "id_card", "confidence": conf}
            for box, conf in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), strict=True)
        ]


@pytest.fixture(scope="module")
def detector() -> TinyDetector:
    apply_offline_env(get_settings().abs_state_dir)
    return TinyDetector()


@pytest.fixture(scope="module")
def scenes() -> list[np.ndarray]:
    from producers.idcard_scenes import generate_scene

    return [generate_scene(i, size=(160, 120) if i % 2 else (128, 160)).image for i in range(6)]


def test_one_forward_pass_gives_detections_and_heatmap(
    detector: TinyDetector, scenes: list[np.ndarray]
) -> None:
    model = detection_model_of(detector)  # the fused copy Ultralytics' predictor runs
    assert model is not detector.yolo.model
    with EigenCAM(model) as cam:
        before = detector.calls
        detections, heat = cam(detector.predict, scenes[0])
        assert detector.calls == before + 1
        assert heat.shape == scenes[0].shape[:2] and heat.dtype == np.float32
        assert 0.0 <= heat.min() and heat.max() <= 1.0 and heat.max() > 0.5
        assert all(set(d) == {"bbox", "category", "confidence"} for d in detections)
        # The hooked layers are the three before the head (listing 11.7): recorded at the stride-32 scale.
        assert cam._input_shape is not None and cam._input_shape[1] <= IMGSZ
    assert not any(layer._forward_hooks for layer in model.model) and not model._forward_pre_hooks


def test_overlay_and_selection() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        overlay_heatmap(image, np.zeros((5, 4), np.float32))
    ids = [f"img-{k}" for k in range(10)]
    conf = {key: 1.0 - k / 10 for k, key in enumerate(ids)}
    chosen = select_images(conf, ids, 3, 4, seed=1)
    assert [key for key, why in chosen if why == "lowest_confidence"] == ["img-9", "img-8", "img-7"]
    assert len({key for key, _ in chosen}) == 7


def test_heatmap_job_writes_overlays_index_and_comparison(
    detector: TinyDetector, scenes: list[np.ndarray], tmp_path: Path
) -> None:
    window = {f"win/{k}": img for k, img in enumerate(scenes[:4])}
    reference = {f"ref-{k}": img for k, img in enumerate(scenes[4:])}
    conf = {"win/0": 0.9, "win/1": 0.1, "win/2": 0.5}
    result = heatmap_job(
        window,
        conf,
        detector,
        tmp_path,
        n_lowest=2,
        n_random=1,
        reference_images=reference,
        drift_detected=True,
        n_pairs=2,
    )
    assert result.ok and result.metrics["n_heatmaps"] == 3 and result.metrics["drift_comparison"]
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert [e["image_id"] for e in index["images"][:2]] == ["win/3", "win/1"]  # no archived conf counts as 0
    from PIL import Image

    for entry in index["images"]:
        with Image.open(tmp_path / entry["file"]) as png:
            h, w = window[entry["image_id"]].shape[:2]
            assert png.size == (w, h)
    with Image.open(tmp_path / COMPARISON_NAME) as grid:
        assert grid.size[1] == 2 * (240 + 24)
    assert result.outputs["drift_comparison"] == tmp_path / COMPARISON_NAME
    gallery = result.outputs["html"].read_text()
    assert all(f'src="{entry["file"]}"' in gallery for entry in index["images"])
    assert f'src="{COMPARISON_NAME}"' in gallery


def test_heatmap_job_failures(detector: TinyDetector, scenes: list[np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match="no images"):
        heatmap_job({}, {}, detector, tmp_path)
    with pytest.raises(JobFailed, match="reference images are missing"):
        heatmap_job({"a": scenes[0]}, {}, detector, tmp_path, drift_detected=True)
    with pytest.raises(JobFailed, match="at least 32 pixels|not an H x W x 3"):
        heatmap_job({"a": scenes[0][:, :, :2]}, {}, detector, tmp_path)

    class OnnxOnly:
        backend = "onnx"

    with pytest.raises(JobFailed, match="torch backend"):
        heatmap_job({"a": scenes[0]}, {}, OnnxOnly(), tmp_path)


@pytest.mark.skipif(
    not (Path(__file__).resolve().parent.parent / "serving" / "models" / "model_card.json").is_file(),
    reason="no committed detector",
)
def test_heatmaps_with_the_committed_detector(scenes: list[np.ndarray], tmp_path: Path) -> None:
    from serving.detector_model import DetectorModel

    apply_offline_env(get_settings().abs_state_dir)
    detector = DetectorModel(backend="torch")
    with EigenCAM(detection_model_of(detector)) as cam:
        detections, heat = cam(detector.predict, scenes[1])
    assert detections == detector.predict(scenes[1])  # the hooks do not change what the detector returns
    assert heat.shape == scenes[1].shape[:2] and heat.max() == pytest.approx(1.0, abs=1e-3)
    result = heatmap_job(
        {"a": scenes[0], "b": scenes[1]}, {"a": 0.3}, detector, tmp_path, n_lowest=1, n_random=1
    )
    assert result.metrics["n_heatmaps"] == 2 and (tmp_path / INDEX_NAME).is_file()
