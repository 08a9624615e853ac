"""EigenCAM: where a detector looks, as the first principal component of a layer's activations.

For a layer output ``A`` of shape C x h x w, each of the h*w positions is a C-vector. EigenCAM
centres these vectors (over positions) and projects them on their first principal
direction, the first right singular vector ``v1`` of the centred (h*w) x C matrix ``X``:
``cam = X v1``, reshaped to h x w. Since ``X v1 = s1 u1``, it comes from the eigenvector of the
largest eigenvalue of the smaller Gram matrix, ``X X^T`` (h*w <= C) or ``X^T X``: the same
vector as a thin SVD (``full_matrices=False``) in a fraction of its time, and far from the
h*w x h*w matrix a full SVD (the grad-cam package's) builds. The sign of a principal direction
is arbitrary, so it is fixed here: the map correlates positively with the layer's total
activation (sum over channels), and where that correlation is zero its largest absolute value
is positive.

Several layers combine as in the grad-cam package: each layer's map is clipped at zero and
min-max scaled, then the maps are averaged and scaled again to [0, 1]; the average is formed at
the network's input resolution and resized to the image once. :class:`EigenCAM` records the
target layers' outputs with forward hooks, so the detector's own forward pass yields both its
detections and the heatmap; the letterbox padding the detector adds is cropped away before the
map is resized to the input image.

>>> a = np.zeros((2, 3, 3), np.float32)
>>> a[0, 1, 1] = a[1, 1, 1] = 4.0  # one hot spot in both channels
>>> cam = eigencam_projection(a)
>>> int(cam.argmax()), bool(cam[1, 1] > 0 > cam[0, 0])
(4, True)

Reference: M. B. Muhammad and M. Yeasin, "Eigen-CAM: Class Activation Map using Principal
Components", IJCNN 2020; J. Gildenblat, pytorch-grad-cam (``get_2d_projection``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import cv2
import numpy as np

T = TypeVar("T")


def eigencam_projection(activations: np.ndarray) -> np.ndarray:
    """The h x w projection of C x h x w activations on their first principal component."""
    if not isinstance(activations, np.ndarray) or activations.ndim != 3 or 0 in activations.shape:
        raise ValueError(
            f"activations must be a non-empty C x h x w array, got {getattr(activations, 'shape', None)}"
        )
    c, h, w = activations.shape
    x = np.nan_to_num(activations.reshape(c, h * w).T.astype(np.float64))
    x -= x.mean(axis=0)
    scale = float(np.abs(x).max())
    if scale == 0:  # constant activations: no direction, no evidence
        return np.zeros((h, w), np.float32)
    x /= scale  # unit scale, so the Gram matrix neither underflows nor overflows
    if h * w <= c:
        eigenvalues, vectors = np.linalg.eigh(x @ x.T)
        projection = vectors[:, -1] * np.sqrt(max(eigenvalues[-1], 0.0))  # s1 u1
    else:
        eigenvalues, vectors = np.linalg.eigh(x.T @ x)
        projection = x @ vectors[:, -1]  # X v1
    projection *= scale
    total = x.sum(axis=1)  # centred total activation per position
    agreement = float(projection @ total)
    if agreement < 0 or (agreement == 0 and projection[np.argmax(np.abs(projection))] < 0):
        projection = -projection
    return projection.reshape(h, w).astype(np.float32)


def _scale(cam: np.ndarray) -> np.ndarray:
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)


def letterbox_region(original: tuple[int, int], network_input: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the image inside a centred letterbox of ``network_input``.

    Both shapes are (height, width); the image was scaled by the largest factor that fits.

    >>> letterbox_region((480, 720), (448, 640))
    (10, 0, 427, 640)
    """
    (h, w), (hi, wi) = original, network_input
    if min(h, w, hi, wi) <= 0:
        raise ValueError(f"shapes must be positive, got {original} and {network_input}")
    scale = min(hi / h, wi / w)
    new_h, new_w = min(hi, max(round(h * scale), 1)), min(wi, max(round(w * scale), 1))
    top, left = round((hi - new_h) / 2 - 0.1), round((wi - new_w) / 2 - 0.1)
    return max(top, 0), max(left, 0), new_h, new_w


def combine_layer_maps(
    layer_activations: Sequence[np.ndarray],
    image_shape: tuple[int, int],
    network_input: tuple[int, int] | None = None,
) -> np.ndarray:
    """The [0, 1] float32 heatmap of ``image_shape`` (h, w) from several layers' C x h x w outputs.

    With ``network_input`` (h, w) the layer maps cover a letterboxed input, whose padding is
    cropped before resizing; without it they cover the image itself.
    """
    if not layer_activations:
        raise ValueError("layer_activations is empty")
    h, w = image_shape
    maps = []
    for activations in layer_activations:
        cam = eigencam_projection(activations)
        if network_input is not None:
            hi, wi = network_input
            cam = cv2.resize(cam, (wi, hi), interpolation=cv2.INTER_LINEAR)
            top, left, ch, cw = letterbox_region((h, w), (hi, wi))
            cam = cam[top : top + ch, left : left + cw]
        else:
            cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
        maps.append(_scale(np.maximum(cam, 0)))
    # Averaged at the network's resolution, then resized once: bilinear resizing keeps [0, 1].
    combined = _scale(np.maximum(np.mean(maps, axis=0), 0)).astype(np.float32)
    if combined.shape != (h, w):
        combined = _scale(cv2.resize(combined, (w, h), interpolation=cv2.INTER_LINEAR))
    return combined.astype(np.float32)


def default_target_layers(detection_model: Any) -> list[Any]:
    """The layers of listing 11.7: the three last blocks before a YOLOv8 detection head."""
    layers = getattr(detection_model, "model", None)
    if layers is None or len(layers) < 4:
        raise ValueError("expected an Ultralytics detection model whose .model holds its layers")
    return [layers[-2], layers[-3], layers[-4]]


def _first_tensor(output: Any) -> Any:
    while isinstance(output, list | tuple):
        output = output[0]
    return output


class EigenCAM:
    """Heatmaps from the detector's own forward pass, by forward hooks on ``target_layers``.

    ``detection_model`` is the torch module the predict function runs (for Ultralytics,
    ``YOLO(...).model``); its forward pre-hook records the letterboxed input size. Use as a
    context manager, or call :meth:`close`, to remove the hooks.
    """

    def __init__(self, detection_model: Any, target_layers: Sequence[Any] | None = None) -> None:
        layers = list(target_layers) if target_layers is not None else default_target_layers(detection_model)
        if not layers:
            raise ValueError("target_layers is empty")
        self._outputs: list[np.ndarray | None] = [None] * len(layers)
        self._input_shape: tuple[int, int] | None = None
        # Closures, not bound methods: if the model is deep-copied (Ultralytics copies it when it
        # builds its predictor) the copied hooks must still write here, not into a copy of self.
        self._handles = [detection_model.register_forward_pre_hook(self._input_recorder())]
        self._handles += [
            layer.register_forward_hook(self._output_recorder(k)) for k, layer in enumerate(layers)
        ]

    def _input_recorder(self) -> Callable[..., None]:
        def record(_module: Any, args: tuple) -> None:
            tensor = _first_tensor(args)
            self._input_shape = (int(tensor.shape[-2]), int(tensor.shape[-1]))

        return record

    def _output_recorder(self, index: int) -> Callable[..., None]:
        def record(_module: Any, _inputs: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            self._outputs[index] = tensor[0].detach().float().cpu().numpy()

        return record

    def __call__(self, predict: Callable[[np.ndarray], T], image: np.ndarray) -> tuple[T, np.ndarray]:
        """``(predict(image), heatmap)`` from one forward pass; the heatmap has the image's h x w."""
        self._outputs = [None] * len(self._outputs)
        self._input_shape = None
        prediction = predict(image)
        if self._input_shape is None or any(out is None for out in self._outputs):
            raise RuntimeError("the predict function did not run the hooked model's layers")
        heatmap = combine_layer_maps(self._outputs, image.shape[:2], self._input_shape)
        return prediction, heatmap

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> EigenCAM:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
