"""Declare the registry's topics on the broker (auto-creation is off)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

from driftstream.settings import Settings
from producers.contracts import TOPICS, TopicSpec


def new_topic(spec: TopicSpec, settings: Settings) -> NewTopic:
    return NewTopic(
        spec.name,
        num_partitions=spec.partitions or settings.kafka_partitions,
        replication_factor=1,
        config=spec.config(settings.kafka_max_message_bytes),
    )


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; return the names created. Existing topics are left as they are."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [s for s in (specs or list(TOPICS.values())) if s.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([new_topic(s, settings) for s in wanted], request_timeout=timeout_s)
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except Exception as exc:  # a concurrent `up` may have created it first
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
