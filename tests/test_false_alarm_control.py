"""Alpha from the budget, Benjamini-Hochberg/Holm, and the persistence rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_apps.false_alarm_control import (
    DriftPolicy,
    DriftTest,
    benjamini_hochberg,
    holm,
    independent_windows_in_run,
    per_window_alpha,
)


def test_alpha_from_budget_hop_and_persistence() -> None:
    # 300 s windows every 30 s: 2880 windows a day; B = 0.1 a day
    assert per_window_alpha(0.1, hop_s=30, size_s=300) == pytest.approx(0.1 / 2880)
    # a run of 2..10 overlapping hops shares events: no credit, same alpha
    for m in range(1, 11):
        assert independent_windows_in_run(m, 30, 300) == 1
        assert per_window_alpha(0.1, 30, 300, persistence_hops=m) == pytest.approx(0.1 / 2880)
    # 11 hops reach a window disjoint from the first: two independent tests
    assert independent_windows_in_run(11, 30, 300) == 2
    assert per_window_alpha(0.1, 30, 300, persistence_hops=11) == pytest.approx(math.sqrt(0.1 / 2880))
    # tumbling windows: every window of a run is independent
    assert per_window_alpha(1.0, 300, 300, persistence_hops=3) == pytest.approx((1.0 / 288) ** (1 / 3))
    # a budget beyond one alarm per window is capped at alpha = 1
    assert per_window_alpha(1e6, 30, 300) == 1.0


@pytest.mark.parametrize("kwargs", [
    {"false_alarms_per_day": 0.0, "hop_s": 30, "size_s": 300},
    {"false_alarms_per_day": math.inf, "hop_s": 30, "size_s": 300},
    {"false_alarms_per_day": 0.1, "hop_s": 0, "size_s": 300},
    {"false_alarms_per_day": 0.1, "hop_s": 60, "size_s": 30},
    {"false_alarms_per_day": 0.1, "hop_s": 30, "size_s": 300, "persistence_hops": 0},
])
def test_bad_budget_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        per_window_alpha(**kwargs)


def test_benjamini_hochberg_hand_computed() -> None:
    # sorted 0.01 0.03 0.04 0.2 against k * 0.05 / 4 = 0.0125 0.025 0.0375 0.05: only the first
    assert benjamini_hochberg({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.2}, 0.05) == \
        {"a": True, "b": False, "c": False, "d": False}
    # step-up: 0.02 > 0.05/3 on its own, but 0.024 <= 2 * 0.05 / 3 carries both
    assert benjamini_hochberg({"a": 0.02, "b": 0.024, "c": 0.5}, 0.05) == {"a": True, "b": True, "c": False}
    # untested features (NaN) are not part of the family and never flagged
    assert benjamini_hochberg({"a": 0.02, "b": math.nan}, 0.05) == {"a": True, "b": False}
    assert benjamini_hochberg({}, 0.05) == {}
    with pytest.raises(ValueError):
        benjamini_hochberg({"a": 0.1}, 0.0)


def test_holm_hand_computed() -> None:
    # 0.01 <= 0.05/3, 0.02 <= 0.05/2, 0.04 > 0.05/1 is false: 0.04 <= 0.05 -> all three
    assert holm({"a": 0.01, "b": 0.02, "c": 0.04}, 0.05) == {"a": True, "b": True, "c": True}
    # 0.02 > 0.05/3 stops the procedure at the first step
    assert holm({"a": 0.02, "b": 0.024, "c": 0.5}, 0.05) == {"a": False, "b": False, "c": False}


def test_bh_controls_the_window_level_false_alarm_rate_under_the_null() -> None:
    rng = np.random.default_rng(0)
    alpha = 0.05
    p = rng.uniform(size=(20_000, 7))
    any_flag = [any(benjamini_hochberg(dict(enumerate(row)), alpha).values()) for row in p]
    # under the global null with independent tests BH's family-wise rate is exactly alpha
    assert abs(np.mean(any_flag) - alpha) < 0.006


def _tests(**p_values: float) -> dict[str, DriftTest]:
    return {k: DriftTest(score=0.0, p_value=v, method="ks", n=10) for k, v in p_values.items()}


def test_persistence_rule_runs_gaps_and_repeats() -> None:
    policy = DriftPolicy(alpha=0.01, hop_s=30, persistence_hops=3)
    hot, cold = _tests(x=1e-6), _tests(x=0.5)
    seen = [policy.decide(t, s)["features"]["x"]["drift_detected"]
            for s, t in [(0, hot), (30, hot), (60, cold), (90, hot), (120, hot), (150, hot), (180, hot)]]
    assert seen == [False, False, False, False, False, True, True]
    # recomputing the same window (after a restart) gives the same answer
    assert policy.decide(hot, 180.0)["model_drift_detected"] is True
    # a gap of hops (windows without events) restarts the run
    assert policy.decide(hot, 300.0)["features"]["x"]["drift_detected"] is False
    # runs are kept per model key
    assert policy.decide(hot, 330.0, key="other")["features"]["x"]["drift_detected"] is False
    restored = DriftPolicy.from_state(policy.to_state())
    assert restored.decide(hot, 330.0)["features"]["x"]["drift_detected"] is False  # run 2 of 3
    assert restored.decide(hot, 360.0)["features"]["x"]["drift_detected"] is True


def test_decision_output_shape_and_bh_inside_a_window() -> None:
    policy = DriftPolicy.from_budget(0.1, size_s=300, hop_s=30)
    out = policy.decide(_tests(brightness=1e-9, area=0.3, blank=math.nan), window_start=0.0, key="detector")
    assert out["alpha"] == pytest.approx(0.1 / 2880)
    assert out["features"]["brightness"] == {"score": 0.0, "p_value": 1e-9, "method": "ks", "n": 10,
                                             "flagged": True, "drift_detected": True}
    assert out["features"]["area"]["flagged"] is False
    assert out["features"]["blank"]["p_value"] is None and out["features"]["blank"]["flagged"] is False
    assert out["model_drift_detected"] is True
    holm_policy = DriftPolicy(alpha=0.05, hop_s=30, correction="holm")
    assert holm_policy.decide(_tests(a=0.02, b=0.024, c=0.5), 0.0)["model_drift_detected"] is False
    assert DriftPolicy(alpha=0.05, hop_s=30).decide(_tests(a=0.02, b=0.024, c=0.5), 0.0)["model_drift_detected"] is True


@pytest.mark.parametrize("kwargs", [
    {"alpha": 0.0, "hop_s": 30}, {"alpha": 0.1, "hop_s": 0}, {"alpha": 0.1, "hop_s": 30, "persistence_hops": 0},
    {"alpha": 0.1, "hop_s": 30, "correction": "bonferroni"},
])
def test_bad_policy_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DriftPolicy(**kwargs)
