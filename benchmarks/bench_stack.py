"""The benchmarks' own stack: state and ports of their own, like the tests' (tests/conftest.py).

Benchmarks flood Kafka with synthetic events and 77 KB images; on the stack `make demo` uses
(default ports, ``.state/``) those would land in its windows, archive and reports. Inside
:func:`own_stack` every process the benchmark starts inherits :data:`BENCH_ENV`, and the
components it had to start are stopped again at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driftstream.settings import Settings, get_settings
from driftstream.stack import stack

ROOT = Path(__file__).resolve().parent.parent
BENCH_ENV = {
    "DRIFTSTREAM_STATE_DIR": str(ROOT / ".state" / "bench"),
    "DRIFTSTREAM_KAFKA_PORT": "29592",
    "DRIFTSTREAM_KAFKA_CONTROLLER_PORT": "29692",
    "DRIFTSTREAM_S3_PORT": "28433",
    "DRIFTSTREAM_S3_MASTER_PORT": "29433",
    "DRIFTSTREAM_S3_VOLUME_PORT": "28180",
    "DRIFTSTREAM_S3_FILER_PORT": "28988",
    "DRIFTSTREAM_S3_ADMIN_PORT": "28746",
    "DRIFTSTREAM_PROMETHEUS_PORT": "29590",
    "DRIFTSTREAM_ALERTMANAGER_PORT": "29593",
    "DRIFTSTREAM_STREAM_DETECTOR_METRICS_PORT": "26566",  # stream_throughput's bare agent takes 26666
}


@contextmanager
def own_stack(names: list[str]) -> Iterator[Settings]:
    """Start the named components (``kafka``, ``s3``, ...) on the benchmark ports; yield their settings."""
    unknown = set(names) - set(stack.CORE)
    if unknown:
        raise ValueError(f"own_stack starts core components only ({stack.CORE}), got {sorted(unknown)}")
    os.environ.update(BENCH_ENV)  # inherited by every process the benchmark starts
    settings = get_settings()
    print(f"benchmark stack: {', '.join(names)} under {settings.abs_state_dir}")
    with stack.running(settings, names, log=lambda line: print("  " + line)):
        yield settings
