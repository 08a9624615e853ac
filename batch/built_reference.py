"""What ``driftstream reference build`` wrote: the profile's key and the objects stored beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class BuiltReference:
    model: str
    model_version: str
    profile_key: str
    n_samples: int
    extra_keys: list[str]
    seconds: float


def describe(ref: BuiltReference) -> str:
    """One JSON line for logs and the command line.

    >>> describe(BuiltReference("detector", "v1", "references/detector/v1/profile.json", 600, ["a"], 31.96))
    '{"model": "detector", "model_version": "v1", "profile": "references/detector/v1/profile.json", \
"samples": 600, "objects": 2, "seconds": 32.0}'
    """
    return json.dumps({"model": ref.model, "model_version": ref.model_version, "profile": ref.profile_key,
                       "samples": ref.n_samples, "objects": len(ref.extra_keys) + 1,
                       "seconds": round(ref.seconds, 1)})
