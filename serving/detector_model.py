"""The committed ID-card detector (YOLOv8n, one class ``id_card``) behind one small class.

``DetectorModel.predict(image)`` takes an H x W x 3 uint8 RGB array and returns the cards it
finds as ``{"bbox": [x1, y1, x2, y2], "category": "id_card", "confidence": float}`` in the
image's own pixel coordinates. Two backends give the same detections:

- ``onnx``: onnxruntime on the committed ONNX graph, with letterboxing, box decoding and
  non-maximum suppression done here in numpy; it never imports torch or Ultralytics, so the
  service starts quickly and stays small.
- ``torch``: Ultralytics' predictor on the committed ``.pt`` checkpoint (also the model that
  explanation tools such as EigenCAM need).

``backend="auto"`` takes the one the model card measured as faster (``model_card.json``).

>>> validate_image_size(np.zeros((MIN_SIDE, 64, 3), np.uint8))
>>> validate_image_size(np.zeros((8, 64, 3), np.uint8))
Traceback (most recent call last):
...
ValueError: image is 64x8 pixels; both sides must be at least 32 pixels

Reference: Jocher et al., Ultralytics YOLOv8 (https://docs.ultralytics.com/models/yolov8/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from driftstream.settings import Settings

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODEL_CARD = "model_card.json"
CATEGORY = "id_card"
#: Images with a side shorter than this are rejected: a card cannot be recognised in them.
MIN_SIDE = 32
#: Larger sides are rejected too: decoding them costs more memory than any camera frame needs.
MAX_SIDE = 8192
LETTERBOX_FILL = 114  # Ultralytics' padding gray, which the model saw in training
MAX_DETECTIONS = 100

Backend = Literal["onnx", "torch"]


def validate_image_size(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is an H x W x 3 uint8 array with sides in [MIN_SIDE, MAX_SIDE]."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 RGB array, got {getattr(image, 'dtype', type(image).__name__)} "
            f"with shape {getattr(image, 'shape', None)}"
        )
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"image is {w}x{h} pixels; both sides must be at least {MIN_SIDE} pixels")
    if max(h, w) > MAX_SIDE:
        raise ValueError(f"image is {w}x{h} pixels; no side may exceed {MAX_SIDE} pixels")


def read_model_card(models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """The committed model card: files, version, input size, measured mAP50 and latencies."""
    path = Path(models_dir) / MODEL_CARD
    if not path.is_file():
        raise FileNotFoundError(f"no model card at {path}; run `python -m serving.detector_training`")
    return json.loads(path.read_text())


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to ``size`` x ``size`` as in training.

    Returns the padded image, the scale and the (left, top) padding.
    """
    import cv2

    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    new_w, new_h = max(round(w * scale), 1), max(round(h * scale), 1)
    resized = image if (new_w, new_h) == (w, h) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3)
    return padded, scale, (left, top)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int) -> np.ndarray:
    """Indices of the boxes (x1, y1, x2, y2) kept by greedy NMS, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep: list[int] = []
    while order.size and len(keep) < max_keep:  # each pass removes at least one box
        best, rest = order[0], order[1:]
        keep.append(int(best))
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


def decode_yolo_output(
    output: np.ndarray, conf: float, iou: float, scale: float, pad: tuple[int, int], shape: tuple[int, int]
) -> list[dict[str, Any]]:
    """Detections from a raw single-class YOLOv8 head output of shape (1, 5, N): cx, cy, w, h, score."""
    if output.ndim != 3 or output.shape[:2] != (1, 5):
        raise ValueError(f"expected a single-class YOLOv8 output of shape (1, 5, N), got {output.shape}")
    pred = output[0].T
    pred = pred[pred[:, 4] > conf]
    if not len(pred):
        return []
    cx, cy, bw, bh = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kept = non_max_suppression(boxes, pred[:, 4], iou, MAX_DETECTIONS)
    boxes = (boxes[kept] - [pad[0], pad[1], pad[0], pad[1]]) / scale
    h, w = shape
    boxes = boxes.clip(0, [w, h, w, h])
    return [
        {"bbox": [float(v) for v in box], "category": CATEGORY, "confidence": float(score)}
        for box, score in zip(boxes, pred[kept, 4], strict=True)
    ]


class DetectorModel:
    """The committed detector. ``predict`` is thread-compatible but not re-entrant per instance."""

    def __init__(
        self,
        models_dir: Path = MODELS_DIR,
        backend: Literal["auto", "onnx", "torch"] = "auto",
        conf: float = 0.25,
        iou: float = 0.7,
        num_threads: int = 2,
    ) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"backend must be 'auto', 'onnx' or 'torch', got {backend!r}")
        if not 0 <= conf < 1 or not 0 < iou <= 1:
            raise ValueError(f"conf must be in [0, 1) and iou in (0, 1], got conf={conf}, iou={iou}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.models_dir = Path(models_dir)
        self.card = read_model_card(self.models_dir)
        self.backend: Backend = self.card["serving_backend"] if backend == "auto" else backend
        self.model_version: str = self.card["model_version"]
        self.imgsz: int = int(self.card["imgsz"])
        self.category = CATEGORY
        self.conf, self.iou, self.num_threads = conf, iou, num_threads
        if self.backend == "onnx":
            self._load_onnx()
        else:
            self._load_torch()

    def _load_onnx(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Spinning worker threads steal the CPU from everything else on a shared 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = self.models_dir / self.card["onnx_file"]
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name

    def _load_torch(self) -> None:
        import torch
        from ultralytics import YOLO

        self._yolo = YOLO(str(self.models_dir / self.card["torch_file"]), task="detect")
        # The first call builds Ultralytics' predictor, which resets torch's thread count.
        self._yolo.predict(np.zeros((self.imgsz, self.imgsz, 3), np.uint8), imgsz=self.imgsz, verbose=False)
        torch.set_num_threads(self.num_threads)

    def predict(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Detected cards, highest confidence first."""
        validate_image_size(image)
        if self.backend == "onnx":
            padded, scale, pad = letterbox(np.ascontiguousarray(image), self.imgsz)
            blob = (padded.transpose(2, 0, 1)[None].astype(np.float32)) / np.float32(255.0)
            output = self._session.run(None, {self._input_name: blob})[0]
            return decode_yolo_output(output, self.conf, self.iou, scale, pad, image.shape[:2])
        # Ultralytics reads numpy images as BGR, as cv2.imread returns them.
        result = self._yolo.predict(
            np.ascontiguousarray(image[..., ::-1]),
            imgsz=self.imgsz,
            rect=False,  # square letterbox, the same input the ONNX graph gets
            conf=self.conf,
            iou=self.iou,
            max_det=MAX_DETECTIONS,
            device="cpu",
            verbose=False,
        )[0]
        boxes = result.boxes
        return [
            {"bbox": [float(v) for v in box], "category": CATEGORY, "confidence": float(score)}
            for box, score in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), strict=True)
        ]

    def __repr__(self) -> str:
        return f"DetectorModel(version={self.model_version!r}, backend={self.backend!r}, imgsz={self.imgsz})"


def serving_model(settings: Settings) -> DetectorModel:
    """The model the detector service serves: the card's backend, ``detector_inference_threads`` threads."""
    return DetectorModel(num_threads=settings.detector_inference_threads)
