"""Open-loop pacing of the traffic generators (no servers)."""

from __future__ import annotations

import threading
import time

import pytest

from producers.open_loop import run_open_loop


def test_requests_start_on_schedule_not_after_the_previous_one() -> None:
    starts: list[float] = []
    lock = threading.Lock()

    def job() -> None:
        with lock:
            starts.append(time.monotonic())
        time.sleep(0.2)  # far slower than the 20 ms between planned starts

    t0 = time.monotonic()
    elapsed = run_open_loop((job for _ in range(10)), count=10, rate=50.0, budget_s=10.0, workers=10)
    assert len(starts) == 10
    # a closed loop would start the last one after 9 x 0.2 s; open loop starts it at 9 / 50 s
    assert starts[-1] - t0 < 1.0
    assert starts[-1] - t0 >= 9 / 50 - 0.01
    assert elapsed >= 0.2


def test_the_deadline_abandons_what_has_not_started() -> None:
    started = []
    elapsed = run_open_loop(((lambda: started.append(1)) for _ in range(1000)), count=1000, rate=10.0,
                            budget_s=0.35, workers=2)
    assert 3 <= len(started) <= 5 and elapsed < 1.0


def test_jobs_are_drawn_lazily_and_at_most_count() -> None:
    drawn = []

    def jobs():  # noqa: ANN202
        for i in range(100):
            drawn.append(i)
            yield lambda: None

    run_open_loop(jobs(), count=3, rate=1000.0, budget_s=5.0, workers=1)
    assert drawn == [0, 1, 2]


@pytest.mark.parametrize("kwargs", [dict(rate=0.0), dict(count=0), dict(workers=0), dict(budget_s=0.0)])
def test_bad_parameters_raise(kwargs: dict[str, float]) -> None:
    args = dict(count=1, rate=1.0, budget_s=1.0, workers=1) | kwargs
    with pytest.raises(ValueError):
        run_open_loop([], **args)  # type: ignore[arg-type]
