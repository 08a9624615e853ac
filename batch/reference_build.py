"""``driftstream reference build MODEL``: the training reference that drift is measured against.

Detector: training-distribution scenes (the generator's training split), their seven image
properties and the model's confidences on them; a sample of the images is stored too, for
the Deepchecks image report. Recommender: the training ratings' item popularity and the
model's answers to training users' requests (scores, recommended and requested items).

Everything lands in S3 under ``references/<model>/<model_version>/`` and the profile
becomes the model's current reference (see :mod:`stream_apps.reference_store`).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from batch.built_reference import BuiltReference, describe
from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from stream_apps.reference_profile import ReferenceProfile
from stream_apps.reference_store import save_reference

DETECTOR_REFERENCE_SEED = 20_000  # the training split's seed range of the scene generator


def reference_images_prefix(model_version: str) -> str:
    return f"references/detector/{model_version}/images/"


def build_detector_reference(settings: Settings, n_images: int = 600, n_predicted: int = 200,
                             n_stored_images: int = 200, progress: bool = True) -> BuiltReference:
    from driftstream.offline_env import apply_offline_env

    apply_offline_env(settings.abs_state_dir)
    from producers.idcard_scenes import generate_scene
    from producers.image_properties import estimate_properties
    from producers.traffic_detector import encode_jpeg
    from serving.detector_model import DetectorModel
    from stream_apps.detector_window import PROPERTY_NAMES, detector_reference

    t0 = time.monotonic()
    model = DetectorModel()
    store = ObjectStore(settings)
    rows, confidences, keys = [], [], []
    prefix = reference_images_prefix(model.model_version)
    for i in tqdm(range(n_images), desc="detector reference", disable=not progress, mininterval=2):
        # The service sees JPEG uploads and estimates properties on a pixel grid: so does the reference.
        image = np.asarray(Image.open(io.BytesIO(encode_jpeg(generate_scene(DETECTOR_REFERENCE_SEED + i).image)))
                           .convert("RGB"))
        props = estimate_properties(image)
        rows.append([props[k] for k in PROPERTY_NAMES])
        if i < n_predicted:
            confidences += [d["confidence"] for d in model.predict(image)]
        if i < n_stored_images:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            key = f"{prefix}{i:05d}.png"
            store.put(key, buf.getvalue(), "image/png")
            keys.append(key)
    profile = detector_reference("detector", model.model_version, np.array(rows))
    if confidences:
        profile.numeric["confidence"] = np.sort(np.asarray(confidences, dtype=np.float64))
    table = pd.DataFrame(rows, columns=list(PROPERTY_NAMES))
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    props_key = f"references/detector/{model.model_version}/properties.parquet"
    store.put(props_key, buf.getvalue())
    key = save_reference(store, "detector", profile)
    return BuiltReference("detector", model.model_version, key, n_images, [props_key, *keys],
                          time.monotonic() - t0)


def build_reference(settings: Settings, model: str, progress: bool = True) -> BuiltReference:
    if model == "detector":
        return build_detector_reference(settings, progress=progress)
    if model == "recommender":
        from batch.recommender_reference import build_recommender_reference

        return build_recommender_reference(settings, progress=progress)
    raise ValueError(f"unknown model {model!r}; choose detector or recommender")


__all__ = ["BuiltReference", "ReferenceProfile", "build_reference", "describe"]
