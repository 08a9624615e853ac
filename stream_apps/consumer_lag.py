"""Consumer lag of a group: the messages between its committed offsets and the log end.

Read with a separate, non-subscribing confluent-kafka consumer, so measuring lag never
joins (or disturbs) the group it measures.
"""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


class LagProbe:
    def __init__(self, bootstrap_servers: str, group_id: str) -> None:
        self.group_id = group_id
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap_servers, "group.id": group_id, "enable.auto.commit": False,
        })

    def lag(self, topic: str, timeout_s: float = 5.0) -> int:
        """Sum over partitions of (high watermark - committed offset); uncommitted counts from the low mark."""
        md = self._consumer.list_topics(topic, timeout=timeout_s)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        committed = self._consumer.committed(parts, timeout=timeout_s)
        total = 0
        for tp in committed:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout_s)
            start = tp.offset if tp.offset >= 0 else low
            total += max(0, high - start)
        return total

    def close(self) -> None:
        self._consumer.close()
