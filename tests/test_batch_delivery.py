"""Registration rules of the stream apps' batch handlers (delivery itself is exercised
against the real Kafka by tests/test_stream_recovery.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from faust.types import Message

from driftstream.settings import Settings
from stream_apps.window_pipeline import make_app


def _handler(messages: Sequence[Message]) -> None:
    del messages


def test_batch_agent_subscribes_the_topic_and_maps_it_to_the_handler() -> None:
    app = make_app(Settings(), "test-batch-delivery", 16999)
    topic = app.topic("some.topic.v1", key_serializer="raw", value_serializer="raw")
    assert app.batch_agent(topic)(_handler) is _handler
    assert app.batch_handlers == {"some.topic.v1": _handler}
    assert topic in app.topics


def test_a_topic_takes_one_batch_handler() -> None:
    app = make_app(Settings(), "test-batch-delivery-twice", 16999)
    topic = app.topic("some.topic.v1", key_serializer="raw", value_serializer="raw")
    app.batch_agent(topic)(_handler)
    with pytest.raises(ValueError, match="already has a batch handler"):
        app.batch_agent(topic)(_handler)


def test_handlers_belong_to_their_app() -> None:
    first, second = make_app(Settings(), "test-batch-a", 16999), make_app(Settings(), "test-batch-b", 16999)
    first.batch_agent(first.topic("a.v1", key_serializer="raw", value_serializer="raw"))(_handler)
    assert second.batch_handlers == {}
