"""Open-loop pacing for the traffic generators: request ``i`` starts at ``start + i / rate``.

Each request is sent at its planned time whatever the earlier ones took (up to ``workers``
at once), so a slow service shows up as growing latency, not as a lower offered rate
(the "coordinated omission" a closed loop would hide). The whole run stops at a deadline.

>>> sent = []
>>> elapsed = run_open_loop(((lambda i=i: sent.append(i)) for i in range(5)), count=5, rate=1000.0,
...                         budget_s=5.0, workers=1)
>>> sent, elapsed < 5.0
([0, 1, 2, 3, 4], True)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice


def run_open_loop(jobs: Iterable[Callable[[], None]], *, count: int, rate: float, budget_s: float,
                  workers: int, progress_desc: str | None = None) -> float:
    """Start up to ``count`` of ``jobs`` at ``rate`` a second on ``workers`` threads; return the seconds taken.

    ``jobs`` is read lazily in the calling thread, one job just before its planned start,
    so whatever it draws at random is drawn in order. Jobs not started or not finished
    within ``budget_s`` are abandoned. ``progress_desc`` shows a progress bar on stderr.
    """
    if rate <= 0 or count < 1 or workers < 1 or budget_s <= 0:
        raise ValueError(f"rate and budget_s must be > 0, count and workers >= 1; "
                         f"got {rate}, {budget_s}, {count}, {workers}")
    bar = None
    if progress_desc is not None:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="req", file=sys.stderr, desc=progress_desc)
    start = time.monotonic()
    deadline = start + budget_s
    futures: list[Future[None]] = []
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="traffic") as pool:
            for i, job in enumerate(islice(jobs, count)):
                wait = start + i / rate - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline:
                    break
                fut = pool.submit(job)
                if bar is not None:
                    fut.add_done_callback(lambda _f: bar.update(1))
                futures.append(fut)
            for fut in futures:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    fut.result(timeout=left)
                except TimeoutError:
                    break
            for fut in futures:
                fut.cancel()
        return time.monotonic() - start
    finally:
        if bar is not None:
            bar.close()
