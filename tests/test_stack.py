"""The real local stack: Kafka, SeaweedFS S3, Prometheus and Alertmanager."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from botocore.exceptions import ClientError
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from driftstream.object_store import ObjectStore, s3_client
from driftstream.settings import Settings
from driftstream.stack import stack as stack_mod
from producers.contracts import TOPICS


def _consumer(settings: Settings, group: str, **extra) -> Consumer:
    conf = {
        "bootstrap.servers": settings.bootstrap_servers, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    }
    conf.update(extra)
    return Consumer(conf)


def test_status_reports_core_components_healthy(settings: Settings) -> None:
    st = stack_mod.status(settings, stack_mod.CORE)
    assert set(st) == {"kafka", "s3", "prometheus", "alertmanager"}
    for name, s in st.items():
        assert s.healthy, name
        assert s.pid and s.endpoint
        assert settings.host in s.endpoint


def test_up_is_idempotent(settings: Settings) -> None:
    before = {n: s.pid for n, s in stack_mod.status(settings, stack_mod.CORE).items()}
    lines: list[str] = []
    stack_mod.up(settings, stack_mod.CORE, log=lines.append)
    after = {n: s.pid for n, s in stack_mod.status(settings, stack_mod.CORE).items()}
    assert before == after
    assert all("already running" in line for line in lines)


def test_running_leaves_components_it_did_not_start(settings: Settings) -> None:
    before = {n: s.pid for n, s in stack_mod.status(settings, ["kafka"]).items()}
    with stack_mod.running(settings, ["kafka"], log=lambda line: None) as inside:
        assert inside is settings
    after = stack_mod.status(settings, stack_mod.CORE)
    assert after["kafka"].pid == before["kafka"]
    assert all(st.healthy for st in after.values())  # nothing to stop is not "stop everything"
    assert stack_mod.status(settings, []) == {}


def test_registry_topics_declared_with_configs(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    md = admin.list_topics(timeout=10)
    for name, spec in TOPICS.items():
        assert name in md.topics, name
        assert len(md.topics[name].partitions) == (spec.partitions or settings.kafka_partitions)
    res = ConfigResource(ConfigResource.Type.TOPIC, next(iter(TOPICS)))
    cfg = admin.describe_configs([res])[res].result(timeout=10)
    assert int(cfg["max.message.bytes"].value) >= 10 * 1024 * 1024


def test_auto_topic_creation_is_off(settings: Settings) -> None:
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "message.timeout.ms": 3000})
    errors: list[object] = []
    p.produce(f"undeclared-{uuid.uuid4().hex}", b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None


def test_consumer_group_splits_partitions_and_offsets_survive_restart(settings: Settings) -> None:
    topic = f"test-group-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(timeout=15)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(40):
        producer.produce(topic, key=str(i).encode(), value=f"m{i}".encode(), partition=i % 4)
    assert producer.flush(15) == 0

    group = f"g-{uuid.uuid4().hex[:8]}"
    c1, c2 = _consumer(settings, group), _consumer(settings, group)
    c1.subscribe([topic])
    c2.subscribe([topic])
    seen: dict[str, set[int]] = {"c1": set(), "c2": set()}
    values: list[bytes] = []
    deadline = time.monotonic() + 45
    while len(values) < 40 and time.monotonic() < deadline:
        for name, c in (("c1", c1), ("c2", c2)):
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                seen[name].add(msg.partition())
                values.append(msg.value())
                c.commit(message=msg, asynchronous=False)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(40))
    assert seen["c1"] and seen["c2"], "both consumers must get partitions"
    assert not seen["c1"] & seen["c2"], "a partition belongs to one consumer of the group"
    c1.close()
    c2.close()

    # Restart: the group's committed offsets are at the end, so nothing is re-delivered.
    c3 = _consumer(settings, group)
    committed = c3.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    assert [tp.offset for tp in committed] == [10, 10, 10, 10]
    producer.produce(topic, value=b"after-restart", partition=2)
    producer.flush(10)
    c3.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        msg = c3.poll(0.5)
        if msg is not None and not msg.error():
            got.append(msg.value())
    c3.close()
    assert got == [b"after-restart"]


def test_s3_put_get_list(settings: Settings) -> None:
    store = ObjectStore(settings)
    prefix = f"tests/{uuid.uuid4().hex}/"
    for i in range(3):
        store.put(f"{prefix}obj-{i}", f"payload {i}".encode())
    store.put(f"other/{uuid.uuid4().hex}", b"elsewhere")
    assert sorted(store.list(prefix)) == [f"{prefix}obj-{i}" for i in range(3)]
    assert store.get(f"{prefix}obj-1") == b"payload 1"


@pytest.mark.parametrize(("access", "secret"), [("driftstream", "wrong-secret"), ("nobody", "nothing")])
def test_s3_wrong_key_refused(settings: Settings, access: str, secret: str) -> None:
    client = s3_client(settings, access_key=access, secret_key=secret, retries=1)
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=settings.s3_bucket, Key="tests/forbidden", Body=b"x")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_anonymous_refused(settings: Settings) -> None:
    r = requests.get(f"{settings.s3_endpoint}/{settings.s3_bucket}?list-type=2", timeout=5)
    assert r.status_code == 403
    r = requests.put(f"{settings.s3_endpoint}/{settings.s3_bucket}/tests/anon", data=b"x", timeout=5)
    assert r.status_code == 403


def test_prometheus_scrapes_a_target(settings: Settings) -> None:
    url = f"http://{settings.host}:{settings.prometheus_port}/api/v1/query"
    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline:
        res = requests.get(url, params={"query": 'up{job="prometheus"}'}, timeout=5).json()
        if res["data"]["result"]:
            value = res["data"]["result"][0]["value"][1]
            break
        time.sleep(0.5)
    assert value == "1"


def test_alertmanager_api_answers(settings: Settings) -> None:
    r = requests.get(f"http://{settings.host}:{settings.alertmanager_port}/api/v2/status", timeout=5)
    assert r.status_code == 200
    assert "config" in r.json() and r.json()["cluster"]["status"] in ("ready", "disabled")
