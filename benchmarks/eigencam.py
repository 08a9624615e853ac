"""Milliseconds per image: a plain detector forward pass vs the same pass with EigenCAM hooked in.

The detector is the committed one (``DetectorModel(backend="torch")``) when its model card
exists, else an untrained YOLOv8n of the same architecture (the cost does not depend on the
weights). Rows:

- ``predict``: ``detector.predict(image)`` alone;
- ``predict + EigenCAM``: one forward pass that returns detections and the heatmap (hooks on
  the three layers of listing 11.7, thin SVD, crop, resize);
- ``heatmap only``: the map from already recorded activations, with the Gram-matrix
  eigenvector ``batch.eigencam`` uses and, for comparison, with a thin SVD
  (``full_matrices=False``) and with the full SVD of the grad-cam package.

Run: ``.venv/bin/python benchmarks/eigencam.py [--images 20] [--threads 2]``. Reports medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch import eigencam as eigencam_module  # noqa: E402
from batch.eigencam import EigenCAM, combine_layer_maps  # noqa: E402
from batch.heatmap_job import detection_model_of  # noqa: E402
from driftstream.offline_env import configure_ultralytics  # noqa: E402
from driftstream.settings import get_settings  # noqa: E402
from producers.idcard_scenes import generate_scene  # noqa: E402


class UntrainedDetector:
    """YOLOv8n from its architecture file, behind the ``DetectorModel`` interface."""

    backend = "torch"
    model_version = "untrained-yolov8n"

    def __init__(self, imgsz: int) -> None:
        from ultralytics import YOLO

        self.imgsz = imgsz
        self.yolo = YOLO("yolov8n.yaml", task="detect")

    def predict(self, image: np.ndarray) -> list[dict[str, Any]]:
        result = self.yolo.predict(
            np.ascontiguousarray(image[..., ::-1]), imgsz=self.imgsz, conf=0.25, device="cpu", verbose=False
        )[0]
        return [
            {"bbox": b, "category": "id_card", "confidence": c}
            for b, c in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), strict=True)
        ]


def load_detector(imgsz: int) -> Any:
    try:
        from serving.detector_model import DetectorModel

        return DetectorModel(backend="torch")
    except (FileNotFoundError, KeyError, ImportError):
        return UntrainedDetector(imgsz)


def _median_ms(fn: Callable[[np.ndarray], object], images: list[np.ndarray]) -> float:
    fn(images[0])  # warm-up
    samples = []
    for image in images:
        start = time.perf_counter()
        fn(image)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _paired_ms(
    first: Callable[[np.ndarray], object], second: Callable[[np.ndarray], object], images: list[np.ndarray]
) -> tuple[float, float, float]:
    """Medians of both and of their per-image ratio, timed alternately so that a busy machine
    slows both alike."""
    first(images[0]), second(images[0])  # warm-up
    a, b = [], []
    for image in images:
        for fn, out in ((first, a), (second, b)):
            start = time.perf_counter()
            fn(image)
            out.append((time.perf_counter() - start) * 1e3)
    return (
        statistics.median(a),
        statistics.median(b),
        statistics.median(y / x for x, y in zip(a, b, strict=True)),
    )


def _svd_projection(full_matrices: bool) -> Callable[[np.ndarray], np.ndarray]:
    def project(activations: np.ndarray) -> np.ndarray:
        c, h, w = activations.shape
        x = activations.reshape(c, h * w).T.astype(np.float64)
        x -= x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=full_matrices)
        return (x @ vt[0]).reshape(h, w).astype(np.float32)

    return project


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=640, help="input size of the untrained fallback")
    args = parser.parse_args(argv)
    if args.images < 2 or args.threads < 1:
        raise SystemExit("--images must be >= 2 and --threads >= 1")
    configure_ultralytics(get_settings().abs_state_dir)
    import torch

    detector = load_detector(args.imgsz)
    detector.predict(np.zeros((64, 64, 3), np.uint8))  # builds Ultralytics' predictor
    torch.set_num_threads(args.threads)
    images = [generate_scene(i, size=(640, 480)).image for i in range(args.images)]

    model = detection_model_of(detector)

    def explained(image: np.ndarray) -> object:
        with EigenCAM(model) as cam:  # hooks only during this pass, so the plain pass runs without them
            return cam(detector.predict, image)

    plain, hooked, ratio = _paired_ms(detector.predict, explained, images)
    with EigenCAM(model) as cam:
        cam(detector.predict, images[0])
        recorded, net = list(cam._outputs), cam._input_shape
    shape = images[0].shape[:2]
    heatmap = {
        "Gram eigenvector (used)": _median_ms(lambda _im: combine_layer_maps(recorded, shape, net), images)
    }
    original = eigencam_module.eigencam_projection
    for label, full_matrices in (("thin SVD", False), ("full SVD", True)):
        eigencam_module.eigencam_projection = _svd_projection(full_matrices)
        try:
            heatmap[label] = _median_ms(lambda _im: combine_layer_maps(recorded, shape, net), images)
        finally:
            eigencam_module.eigencam_projection = original

    layers = ", ".join("x".join(str(d) for d in a.shape) for a in recorded)
    print(
        f"detector: {getattr(detector, 'model_version', '?')}, {args.images} images 640x480, "
        f"{args.threads} threads, network input {net[0]}x{net[1]}, layers {layers}"
    )
    print(f"{'step':<42} {'ms/image':>9} {'x predict':>10}")
    rows = [("predict", plain), ("predict + EigenCAM (one pass)", hooked)]
    rows += [(f"heatmap only, {label}", ms) for label, ms in heatmap.items()]
    for label, ms in rows:
        print(f"{label:<42} {ms:>9.1f} {ms / plain:>10.2f}")
    print(f"median per-image ratio (predict + EigenCAM) / predict: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
