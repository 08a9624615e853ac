"""False-alarm control: from a budget of false alarms a day to per-window drift decisions.

Three pieces, applied to every closed window of a model:

1. :func:`per_window_alpha` turns the budget ``B`` (expected model-level false alarms a day
   on stationary data) into the per-window level ``alpha``. A model-level alarm at window
   ``t`` needs a persistent run of flagged windows ending at ``t``; such a run contains
   ``j = 1 + floor((m - 1) * hop / size)`` windows with no event in common, whose tests are
   independent under stationarity, so ``P(alarm at t) <= alpha**j`` and the expected
   number of alarms a day is at most ``(86400 / hop) * alpha**j``. Solving for ``B`` gives
   ``alpha = (B * hop / 86400) ** (1 / j)``. Overlapping windows in a run get no credit:
   their tests are strongly correlated, and the bound holds whatever that correlation.
2. :func:`benjamini_hochberg` (or :func:`holm`) across the features of one window at
   level ``alpha``: under no drift at all, the chance that any feature is flagged is at
   most ``alpha`` (Benjamini and Hochberg, JRSS B 57(1), 1995, for independent or
   positively dependent tests; Holm, Scand. J. Statist. 6(2), 1979, for any dependence).
3. :class:`DriftPolicy` applies the persistence rule: a feature is ``drift_detected``
   once it was flagged in ``m`` consecutive hops, and the model when any feature is.

:func:`window_drift_result` adds the tests and decisions to a window's statistics; both
window accumulators report through it.

>>> per_window_alpha(0.1, hop_s=30, size_s=300)  # 2880 windows a day
3.472222222222222e-05
>>> benjamini_hochberg({"a": 0.001, "b": 0.02, "c": 0.5}, alpha=0.05)
{'a': True, 'b': True, 'c': False}
>>> policy = DriftPolicy(alpha=0.01, hop_s=30, persistence_hops=2)
>>> tests = {"brightness": DriftTest(score=0.4, p_value=1e-9, method="ks")}
>>> policy.decide(tests, window_start=0.0)["model_drift_detected"]
False
>>> policy.decide(tests, window_start=30.0)["features"]["brightness"]["drift_detected"]
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from stream_apps.reference_profile import ReferenceProfile

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class DriftTest:
    """One feature's test in one window: the score (KS D, chi-square statistic) and p-value."""

    score: float
    p_value: float  # NaN: not tested (no data)
    method: str
    n: int = 0  # observations in the window's test


def independent_windows_in_run(persistence_hops: int, hop_s: float, size_s: float) -> int:
    """Windows without a common event among ``persistence_hops`` consecutive ones."""
    if persistence_hops < 1:
        raise ValueError(f"persistence_hops must be >= 1, got {persistence_hops!r}")
    if not (hop_s > 0 and size_s >= hop_s):
        raise ValueError(f"need 0 < hop_s <= size_s, got {hop_s!r} and {size_s!r}")
    return 1 + math.floor((persistence_hops - 1) * hop_s / size_s + 1e-9)


def per_window_alpha(false_alarms_per_day: float, hop_s: float, size_s: float, persistence_hops: int = 1) -> float:
    """Per-window test level that keeps expected model-level false alarms a day within budget."""
    if not (false_alarms_per_day > 0 and math.isfinite(false_alarms_per_day)):
        raise ValueError(f"false_alarms_per_day must be a positive number, got {false_alarms_per_day!r}")
    j = independent_windows_in_run(persistence_hops, hop_s, size_s)
    windows_per_day = SECONDS_PER_DAY / hop_s
    return min(1.0, false_alarms_per_day / windows_per_day) ** (1.0 / j)


def _finite(p_values: Mapping[str, float]) -> list[tuple[float, str]]:
    return sorted((p, k) for k, p in p_values.items() if p is not None and not math.isnan(p))


def benjamini_hochberg(p_values: Mapping[str, float], alpha: float) -> dict[str, bool]:
    """Step-up BH at level ``alpha``; NaN p-values (untested features) are never flagged."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    ranked = _finite(p_values)
    cutoff = 0
    for rank, (p, _) in enumerate(ranked, start=1):
        if p <= rank * alpha / len(ranked):
            cutoff = rank
    flagged = {k for _, k in ranked[:cutoff]}
    return {k: k in flagged for k in p_values}


def holm(p_values: Mapping[str, float], alpha: float) -> dict[str, bool]:
    """Step-down Holm at level ``alpha`` (family-wise error under any dependence)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    ranked = _finite(p_values)
    flagged: set[str] = set()
    for rank, (p, k) in enumerate(ranked):
        if p > alpha / (len(ranked) - rank):
            break
        flagged.add(k)
    return {k: k in flagged for k in p_values}


class DriftPolicy:
    """Per-window multiple testing plus the persistence rule, with its run state per key.

    ``decide`` is idempotent for a window it has already seen (a recomputed window after
    a restart gives the same answer) and starts a new run after a gap of hops.
    """

    def __init__(self, alpha: float, hop_s: float, persistence_hops: int = 1,
                 correction: Literal["bh", "holm"] = "bh") -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if not hop_s > 0:
            raise ValueError(f"hop_s must be > 0, got {hop_s!r}")
        if persistence_hops < 1:
            raise ValueError(f"persistence_hops must be >= 1, got {persistence_hops!r}")
        if correction not in ("bh", "holm"):
            raise ValueError(f"correction must be 'bh' or 'holm', got {correction!r}")
        self.alpha = float(alpha)
        self.hop_s = float(hop_s)
        self.persistence_hops = int(persistence_hops)
        self.correction = correction
        # key -> feature -> [window_start, run length before it, run length at it]
        self._runs: dict[str, dict[str, list[float]]] = {}

    @classmethod
    def from_budget(cls, false_alarms_per_day: float, size_s: float, hop_s: float, persistence_hops: int = 1,
                    correction: Literal["bh", "holm"] = "bh") -> DriftPolicy:
        alpha = per_window_alpha(false_alarms_per_day, hop_s, size_s, persistence_hops)
        return cls(alpha, hop_s, persistence_hops, correction)

    def flags(self, tests: Mapping[str, DriftTest]) -> dict[str, bool]:
        p_values = {k: t.p_value for k, t in tests.items()}
        if self.correction == "holm":
            return holm(p_values, self.alpha)
        return benjamini_hochberg(p_values, self.alpha)

    def _run_length(self, key: str, feature: str, window_start: float, flagged: bool) -> int:
        runs = self._runs.setdefault(key, {})
        state = runs.get(feature)
        tol = 1e-6 * self.hop_s
        if state is not None and abs(window_start - state[0]) <= tol:
            before = int(state[1])  # the same window again
        elif state is not None and abs(window_start - state[0] - self.hop_s) <= tol:
            before = int(state[2])
        elif state is not None and window_start < state[0]:
            return int(flagged)  # an old window: leave the run state alone
        else:
            before = 0  # first window, or a gap of hops without this feature's test
        run = before + 1 if flagged else 0
        runs[feature] = [window_start, before, run]
        return run

    def decide(self, tests: Mapping[str, DriftTest], window_start: float, key: str = "") -> dict[str, Any]:
        """``{"features": {name: {score, p_value, method, n, flagged, drift_detected}},
        "model_drift_detected", "alpha"}`` for one closed window of model ``key``."""
        flags = self.flags(tests)
        features: dict[str, dict[str, Any]] = {}
        for name, test in tests.items():
            run = self._run_length(key, name, window_start, flags[name])
            features[name] = {
                "score": test.score,
                "p_value": None if math.isnan(test.p_value) else test.p_value,
                "method": test.method,
                "n": test.n,
                "flagged": flags[name],
                "drift_detected": run >= self.persistence_hops,
            }
        return {
            "features": features,
            "model_drift_detected": any(f["drift_detected"] for f in features.values()),
            "alpha": self.alpha,
        }

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict of the settings and run lengths."""
        return {
            "alpha": self.alpha,
            "hop_s": self.hop_s,
            "persistence_hops": self.persistence_hops,
            "correction": self.correction,
            "runs": self._runs,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DriftPolicy:
        out = cls(state["alpha"], state["hop_s"], state["persistence_hops"], state["correction"])
        out._runs = {k: {f: list(v) for f, v in runs.items()} for k, runs in state["runs"].items()}
        return out


def window_drift_result(statistics: dict[str, Any], reference: ReferenceProfile | None,
                        drift_tests: Callable[[ReferenceProfile], Mapping[str, DriftTest]],
                        policy: DriftPolicy | None, window_start: float | None, key: str) -> dict[str, Any]:
    """A window's ``statistics`` plus ``reference_version``, ``drift`` and ``model_drift_detected``.

    ``drift`` maps each feature to ``{score, p_value, method, n, flagged, drift_detected}``.
    Without a reference there are no tests; without a policy the tests are reported
    undecided (``flagged``/``drift_detected`` None). The policy records this window in its
    persistence state.

    >>> tests = lambda ref: {"x": DriftTest(0.5, 1e-9, "ks", 100)}
    >>> window_drift_result({"event_count": 3}, None, tests, None, None, "m")["drift"]
    {}
    """
    out = dict(statistics, reference_version=None, drift={}, model_drift_detected=False)
    if reference is None:
        return out
    out["reference_version"] = reference.fingerprint()
    tests = drift_tests(reference)
    if policy is None:
        out["drift"] = {k: {"score": t.score, "p_value": None if math.isnan(t.p_value) else t.p_value,
                            "method": t.method, "n": t.n, "flagged": None, "drift_detected": None}
                        for k, t in tests.items()}
        out["model_drift_detected"] = None
        return out
    if window_start is None:
        raise ValueError("window_start is needed to apply a drift policy")
    decision = policy.decide(tests, window_start, key)
    out["drift"] = decision["features"]
    out["model_drift_detected"] = decision["model_drift_detected"]
    out["alpha"] = decision["alpha"]
    return out
