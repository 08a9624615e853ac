"""Events through the real Kafka into the real S3 and back, with one dead letter."""

from driftstream import roundtrip
from driftstream.settings import Settings


def test_roundtrip_through_kafka_and_s3(settings: Settings) -> None:
    res = roundtrip.run(settings, n_events=15)
    assert (res.sent, res.consumed, res.read_back, res.dead_lettered) == (15, 15, 15, 1)
    assert res.ok
