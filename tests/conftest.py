"""One real stack per test session, on its own ports and state dir.

The test stack never collides with a developer's running stack: it uses the ports
below and ``.state/test``. Tests that need servers take the ``stack`` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TEST_ENV = {
    "DRIFTSTREAM_STATE_DIR": str(ROOT / ".state" / "test"),
    "DRIFTSTREAM_KAFKA_PORT": "19592",
    "DRIFTSTREAM_KAFKA_CONTROLLER_PORT": "19692",
    "DRIFTSTREAM_S3_PORT": "18433",
    "DRIFTSTREAM_S3_MASTER_PORT": "19433",
    "DRIFTSTREAM_S3_VOLUME_PORT": "18180",
    "DRIFTSTREAM_S3_FILER_PORT": "18988",
    "DRIFTSTREAM_S3_ADMIN_PORT": "18746",
    "DRIFTSTREAM_PROMETHEUS_PORT": "19590",
    "DRIFTSTREAM_ALERTMANAGER_PORT": "19593",
    "DRIFTSTREAM_DETECTOR_PORT": "13500",
    "DRIFTSTREAM_RECOMMENDER_PORT": "13501",
    "DRIFTSTREAM_STREAM_DETECTOR_METRICS_PORT": "16566",
    "DRIFTSTREAM_STREAM_RECOMMENDER_METRICS_PORT": "16567",
    "DRIFTSTREAM_BATCH_METRICS_PORT": "16570",
    "DRIFTSTREAM_ALERTS_RECEIVER_PORT": "15501",
    "DRIFTSTREAM_WINDOW_PRESET": "short",
    "DRIFTSTREAM_KAFKA_HEAP": "512m",
}
# Environment variables win over a developer's .env file, so the test stack is isolated.
os.environ.update(TEST_ENV)


@pytest.fixture(scope="session")
def stack() -> Iterator[object]:
    """The core stack (Kafka, S3, Prometheus, Alertmanager), started once per session."""
    from driftstream.settings import get_settings
    from driftstream.stack import stack as stack_mod

    settings = get_settings()
    # Stops what this session started (app processes too), never another session's stack.
    with stack_mod.running(settings, stack_mod.CORE):
        try:
            yield settings
        finally:
            stack_mod.down(settings, [c.name for c in stack_mod.all_components(settings)
                                      if c.name not in stack_mod.CORE])


@pytest.fixture()
def settings(stack):  # noqa: ANN001
    return stack
