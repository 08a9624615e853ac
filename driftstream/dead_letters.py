"""Validation at a consuming boundary: decode, or dead-letter with the reason.

An invalid record never stops a consumer: it is published to its topic's dead-letter
topic as a :class:`~producers.contracts.DeadLetter` (reason and original bytes), and
counted in ``driftstream_dead_letters_total{topic,reason}``.
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from prometheus_client import Counter

from producers.contracts import TOPICS, ContractError, DeadLetter, Event, decode, encode, new_event_id, now

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "driftstream_dead_letters", "Records sent to a dead-letter topic", ["topic", "reason"],
)

E = TypeVar("E", bound=Event)


class ProducesBytes(Protocol):
    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...


class DeadLetterRouter:
    """Decode records of one consumer; route the ones that fail to the dead-letter topic."""

    def __init__(self, producer: ProducesBytes, consumer_name: str) -> None:
        self.producer = producer
        self.consumer_name = consumer_name

    def decode(self, topic: str, raw: bytes | None, partition: int = -1, offset: int = -1) -> Event | None:
        """The decoded event, or ``None`` after dead-lettering it."""
        spec = TOPICS.get(topic)
        if spec is None:
            raise ValueError(f"topic {topic!r} is not in the registry")
        try:
            if raw is None:
                raise ContractError("record has no value (tombstone)", "malformed")
            return decode(spec.schema, raw)
        except ContractError as exc:
            self.dead_letter(topic, raw or b"", str(exc), exc.reason, partition, offset)
            return None

    def dead_letter(self, topic: str, raw: bytes, message: str, reason: str, partition: int, offset: int) -> None:
        spec = TOPICS[topic]
        record = DeadLetter(
            event_id=new_event_id(), source_topic=topic, partition=partition, offset=offset,
            reason=message[:2000], original=raw, failed_at=now(), consumer=self.consumer_name,
        )
        assert spec.dead_letter is not None
        self.producer.produce(spec.dead_letter, encode(record), key=topic.encode())
        DEAD_LETTERS.labels(topic=topic, reason=reason).inc()
        log.warning("dead-lettered record", extra={"topic": topic, "partition": partition, "offset": offset,
                                                   "reason": message[:200]})
