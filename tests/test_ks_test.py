"""The KS test against scipy.stats.ks_2samp, and through a detector window in exact mode."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from producers.contracts import DetectorPrediction, ImageProperties
from stream_apps.detector_window import PROPERTY_NAMES, DetectorWindow, detector_reference
from stream_apps.ks_test import ks_2samp, ks_p_value, ks_statistic


def _scipy(a: np.ndarray, b: np.ndarray, method: str) -> stats._stats_py.KstestResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's own exact-to-asymp fallback notice
        return stats.ks_2samp(a, b, method=method)


CASES = [(1, 1), (3, 8), (25, 40), (100, 100), (137, 5000), (600, 5000), (1000, 999)]


@pytest.mark.parametrize("n, m", CASES)
@pytest.mark.parametrize("shift", [0.0, 0.15, 0.5])
def test_statistic_and_exact_p_value_match_scipy(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n * 7 + m)
    a = rng.normal(shift, 1.0, n)
    b = rng.normal(0.0, 1.0, m)
    if n > 3:  # ties inside and across the samples
        a, b = np.round(a, 1), np.round(b, 1)
    expected = _scipy(a, b, "exact")
    got = ks_2samp(a, b, method="exact")
    assert abs(got.statistic - expected.statistic) <= 1e-12
    assert (got.n, got.m, got.method) == (n, m, "exact")
    # the lattice-path count is exact up to rounding: about 1e-12 absolute
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-5, abs=1e-11)


@pytest.mark.parametrize("n, m", [(50, 60), (600, 5000), (5000, 5000), (6000, 5000)])
def test_asymp_p_value_is_scipy_asymp(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    a, b = rng.normal(0.05, 1.0, n), rng.normal(0.0, 1.0, m)
    expected = _scipy(a, b, "asymp")
    got = ks_2samp(a, b, method="asymp")
    assert abs(got.statistic - expected.statistic) <= 1e-12
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("shift", [0.0, 0.04, 0.08, 0.12, 0.16])
def test_auto_p_value_is_close_to_scipy_auto_for_window_sized_samples(shift: float) -> None:
    # 5000 vs 5000: scipy "auto" is exact, here the Stephens-corrected limit ("fast")
    rng = np.random.default_rng(int(shift * 100))
    a, b = rng.normal(shift, 1.0, 5000), rng.normal(0.0, 1.0, 5000)
    expected = _scipy(a, b, "auto")
    got = ks_2samp(a, b)
    assert got.method == "fast"
    assert got.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert expected.pvalue > 1e-12
    assert abs(math.log(got.p_value / expected.pvalue)) < 0.15  # within about 15%


def test_statistic_equals_scipy_bit_for_bit_with_ties_and_extremes() -> None:
    rng = np.random.default_rng(11)
    for _ in range(150):
        n, m = (int(x) for x in rng.integers(1, 60, 2))
        levels = int(rng.integers(1, 8))
        a = np.sort(rng.integers(0, levels, n) + rng.choice([0.0, 0.5], n) * (rng.random() < 0.5))
        b = np.sort(rng.integers(0, levels, m) + float(rng.integers(-2, 3)))
        assert ks_statistic(a, b) == _scipy(a, b, "asymp").statistic


def test_statistic_hand_computed() -> None:
    # F1 - F2 at 2: 2/3 - 0 is the largest gap
    assert ks_statistic(np.array([1.0, 2.0, 3.0]), np.array([2.5, 3.5])) == pytest.approx(2 / 3)
    assert ks_statistic(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert ks_p_value(0.0, 10, 20) == 1.0


def test_p_values_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(3)
    p = np.array([ks_2samp(rng.normal(size=100), rng.normal(size=150)).p_value for _ in range(300)])
    # the discrete statistic makes the test slightly conservative, never liberal
    assert 0.02 <= (p < 0.05).mean() <= 0.08
    assert 0.05 <= (p < 0.1).mean() <= 0.14


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        ks_statistic(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError):
        ks_p_value(0.5, 0, 10)
    with pytest.raises(ValueError):
        ks_p_value(1.5, 10, 10)
    with pytest.raises(ValueError, match="method"):
        ks_p_value(0.5, 10, 10, method="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ks_2samp(np.ones((2, 2)), np.ones(3))


def test_window_drift_score_in_exact_mode_equals_scipy_on_the_same_values() -> None:
    rng = np.random.default_rng(4)
    train = rng.uniform(0.2, 0.8, (3000, len(PROPERTY_NAMES)))
    reference = detector_reference("idcard", "v1", train, sample_size=2000, created_at=0.0)
    live = rng.uniform(0.25, 0.85, (700, len(PROPERTY_NAMES)))
    window = DetectorWindow(sample_capacity=1000)
    for i, row in enumerate(live):
        window.update(DetectorPrediction(
            event_id=f"e{i}", request_id=f"r{i}", model_name="idcard", model_version="v1",
            event_time=1.0 + i, published_at=1.0 + i, latency_ms=1.0, detections=[],
            image=ImageProperties(*row)))
    tests = window.drift_tests(reference)
    assert set(tests) == set(PROPERTY_NAMES)
    for j, name in enumerate(PROPERTY_NAMES):
        expected = _scipy(live[:, j], reference.numeric[name], "auto")
        assert abs(tests[name].score - expected.statistic) <= 1e-12
        assert tests[name].p_value == pytest.approx(expected.pvalue, rel=1e-5, abs=1e-11)
        assert tests[name].n == 700
