"""Reference profiles in S3, versioned by model version.

Layout::

    references/<model>/<model_version>/profile.json   the profile
    references/<model>/current.json                   {"model_version": ..., "key": ...}

``load_reference`` raises :class:`ReferenceMissing` with the key it looked for, so a
worker can say exactly what is missing (and expose it as a metric) instead of going quiet.
"""

from __future__ import annotations

import json

from driftstream.object_store import ObjectStore
from stream_apps.reference_profile import ReferenceProfile


class ReferenceMissing(LookupError):
    def __init__(self, model: str, key: str) -> None:
        super().__init__(f"no reference profile for model {model!r} at s3 key {key!r}; "
                         f"build one with `driftstream reference build {model}`")
        self.model = model
        self.key = key


def profile_key(model: str, model_version: str) -> str:
    return f"references/{model}/{model_version}/profile.json"


def current_key(model: str) -> str:
    return f"references/{model}/current.json"


def save_reference(store: ObjectStore, model: str, profile: ReferenceProfile) -> str:
    """Store ``profile`` under its model version and make it the current one."""
    key = profile_key(model, profile.model_version)
    store.put(key, profile.to_bytes(), "application/json")
    pointer = {"model_version": profile.model_version, "key": key, "fingerprint": profile.fingerprint()}
    store.put(current_key(model), json.dumps(pointer).encode(), "application/json")
    return key


def load_reference(store: ObjectStore, model: str, model_version: str | None = None) -> ReferenceProfile:
    """The profile of ``model_version``, or the current one."""
    if model_version is None:
        ptr_key = current_key(model)
        if not store.exists(ptr_key):
            raise ReferenceMissing(model, ptr_key)
        key = json.loads(store.get(ptr_key))["key"]
    else:
        key = profile_key(model, model_version)
    if not store.exists(key):
        raise ReferenceMissing(model, key)
    return ReferenceProfile.from_bytes(store.get(key))
