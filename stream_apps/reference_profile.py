"""The reference a model's windows are compared with: what the training data looked like.

A :class:`ReferenceProfile` holds, per numeric feature, a sorted uniform random sample
of reference values (at most ``sample_size``, 50,000 by default; the KS test treats it as
the second sample, so its size enters the p-value) and, per categorical feature, the
reference category counts. Every window is compared with the same reference, so its
sampling noise is shared by all of them: a reference as small as a window, if unlucky,
raises the false-alarm rate of every window for as long as it is used (up to twenty-fold
in simulations); ten times a window's sample keeps that within about two-fold.

Optional extras: the design effect of clustered categorical counts (see
:mod:`stream_apps.categorical_drift`) and integer codebooks that map raw ids to category
indexes (the recommender's item popularity buckets).

It serialises to canonical JSON (sorted keys; arrays as base64 of little-endian
float64) so the same profile always gives the same bytes and :meth:`fingerprint`.

>>> ref = ReferenceProfile.build("detector", "v1", numeric={"brightness": [0.3, 0.1, 0.2]},
...                              categorical={"fallback": ["false", "false", "true"]}, created_at=0.0)
>>> ref.numeric["brightness"].tolist(), ref.categorical["fallback"]
([0.1, 0.2, 0.3], {'false': 2, 'true': 1})
>>> ReferenceProfile.from_bytes(ref.to_bytes()) == ref
True
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

FORMAT = "driftstream.reference/v1"
#: Ten times a window's sample (5000), so the reference's own sampling noise, shared by every
#: window compared with it, moves the windows' false-alarm rate little.
REFERENCE_SAMPLE_SIZE = 50_000


@dataclass(eq=False)
class ReferenceProfile:
    model: str
    model_version: str
    created_at: float  # seconds since the Unix epoch
    numeric: dict[str, np.ndarray] = field(default_factory=dict)  # sorted float64 samples
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> count
    design_effects: dict[str, float] = field(default_factory=dict)  # categorical feature -> delta
    codebooks: dict[str, dict[int, int]] = field(default_factory=dict)  # raw id -> category index
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.model or not self.model_version:
            raise ValueError("model and model_version must be non-empty")
        for name, values in self.numeric.items():
            arr = np.asarray(values, dtype=np.float64)
            if arr.ndim != 1 or len(arr) == 0:
                raise ValueError(f"numeric feature {name!r} needs a non-empty 1-d sample")
            if not np.isfinite(arr).all():
                raise ValueError(f"numeric feature {name!r} has non-finite values")
            if (np.diff(arr) < 0).any():
                arr = np.sort(arr)
            self.numeric[name] = arr
        for name, counts in self.categorical.items():
            if not counts or any(int(c) < 0 for c in counts.values()) or sum(counts.values()) == 0:
                raise ValueError(f"categorical feature {name!r} needs non-negative counts with a positive total")
        for name, delta in self.design_effects.items():
            if not (delta > 0 and math.isfinite(delta)):
                raise ValueError(f"design effect of {name!r} must be a positive number, got {delta!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReferenceProfile) and self.to_bytes() == other.to_bytes()

    def frequencies(self, name: str) -> dict[str, float]:
        """Reference category frequencies (proportions) of a categorical feature."""
        counts = self.categorical[name]
        total = sum(counts.values())
        return {k: v / total for k, v in counts.items()}

    def design_effect(self, name: str) -> float:
        return self.design_effects.get(name, 1.0)

    def categorical_size(self, name: str) -> int:
        return int(sum(self.categorical[name].values()))

    @classmethod
    def build(
        cls,
        model: str,
        model_version: str,
        *,
        numeric: Mapping[str, ArrayLike] | None = None,
        categorical: Mapping[str, ArrayLike | Mapping[str, int]] | None = None,
        sample_size: int = REFERENCE_SAMPLE_SIZE,
        seed: int = 0,
        created_at: float | None = None,
        design_effects: Mapping[str, float] | None = None,
        codebooks: Mapping[str, Mapping[int, int]] | None = None,
    ) -> ReferenceProfile:
        """A profile from raw arrays: numeric features are subsampled (without replacement,
        seeded) to at most ``sample_size`` values; categorical ones are counted (labels become
        strings, booleans ``"true"``/``"false"``) unless already given as ``{category: count}``."""
        if sample_size < 1:
            raise ValueError(f"sample_size must be >= 1, got {sample_size!r}")
        rng = np.random.default_rng(seed)
        num: dict[str, np.ndarray] = {}
        for name, values in (numeric or {}).items():
            arr = np.asarray(values, dtype=np.float64).ravel()
            if len(arr) > sample_size:
                arr = arr[rng.choice(len(arr), size=sample_size, replace=False)]
            num[name] = np.sort(arr)
        cat: dict[str, dict[str, int]] = {}
        for name, values in (categorical or {}).items():
            if isinstance(values, Mapping):
                cat[name] = {str(k): int(v) for k, v in values.items()}
            else:
                arr = np.asarray(values)
                # booleans get the labels the windows count them under
                arr = np.where(arr, "true", "false") if arr.dtype == bool else arr.astype(str)
                labels, counts = np.unique(arr, return_counts=True)
                cat[name] = {str(k): int(c) for k, c in zip(labels, counts, strict=True)}
        return cls(
            model=model,
            model_version=model_version,
            created_at=time.time() if created_at is None else float(created_at),
            numeric=num,
            categorical=cat,
            design_effects=dict(design_effects or {}),
            codebooks={k: {int(i): int(c) for i, c in v.items()} for k, v in (codebooks or {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (arrays as base64 of little-endian float64)."""
        return {
            "format": FORMAT,
            "model": self.model,
            "model_version": self.model_version,
            "created_at": self.created_at,
            "numeric": {
                k: {"dtype": "<f8", "base64": base64.b64encode(v.astype("<f8").tobytes()).decode("ascii")}
                for k, v in self.numeric.items()
            },
            "categorical": self.categorical,
            "design_effects": self.design_effects,
            "codebooks": {k: {str(i): c for i, c in v.items()} for k, v in self.codebooks.items()},
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a reference profile: format {data.get('format')!r}, expected {FORMAT!r}")
        numeric = {}
        for k, v in data["numeric"].items():
            if v.get("dtype") != "<f8":
                raise ValueError(f"numeric feature {k!r}: unsupported dtype {v.get('dtype')!r}")
            numeric[k] = np.frombuffer(base64.b64decode(v["base64"]), dtype="<f8").astype(np.float64)
        return cls(
            model=data["model"],
            model_version=data["model_version"],
            created_at=float(data["created_at"]),
            numeric=numeric,
            categorical={k: {str(c): int(n) for c, n in v.items()} for k, v in data["categorical"].items()},
            design_effects={k: float(v) for k, v in data.get("design_effects", {}).items()},
            codebooks={k: {int(i): int(c) for i, c in v.items()} for k, v in data.get("codebooks", {}).items()},
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        try:
            decoded = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a reference profile: {exc}") from None
        if not isinstance(decoded, dict):
            raise ValueError("not a reference profile: expected a JSON object")
        return cls.from_dict(decoded)

    def fingerprint(self) -> str:
        """Short content hash: names the exact reference a window was compared with.

        Computed once: a profile is not meant to change after it is built or loaded.
        """
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self.to_bytes()).hexdigest()[:16]
        return self._fingerprint
