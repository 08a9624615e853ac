"""A Faust transport whose consumer hands fetched records to the stream apps in batches.

faust-streaming 0.15 delivers every record through the conductor, a channel queue, an
``Event`` and the agent's stream: about 100 us of framework work per record, which caps
one worker near 9,500 records/s on this project's machines even when the agent only
counts (``benchmarks/stream_throughput.py`` measures that ceiling in the same run).

:class:`FastDrainConsumer` keeps Faust's fetcher, consumer group, rebalancing, commits,
changelogged tables and their recovery, and changes how records of a topic registered
with :meth:`BatchDelivery.batch_agent` reach the app:

- records of one partition are collected into a batch (at most ``max_batch`` records,
  at most ``max_wait_s`` old) and handed to the handler in one synchronous call;
- the producer is then flushed, so the table writes the handler made are in the
  changelog, and only then are the batch's offsets acknowledged: an offset Faust
  commits never runs ahead of the state it produced, and a SIGKILLed worker loses no
  window update (re-delivered records are recognised by the windows' pane offsets);
- a batch collected before a rebalance (its generation changed, or the flow was
  suspended) is dropped unacknowledged: the partition's new owner reads those records
  again from the committed offset, after restoring the state from the changelog.

Records of other topics (changelogs during recovery, ordinary agents) go through Faust's
own path; when delivering one cannot wait, it is delivered with a plain ``await`` instead
of racing it against a flow suspension with four asyncio tasks.

Use it through :func:`stream_apps.window_pipeline.make_app`; every stream app does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[Message]], None]

_YIELD_EVERY = 1000  # records between explicit yields to the event loop (health checks, timers)


@dataclass
class _Batch:
    handler: BatchHandler
    generation: int
    since: float
    messages: list[Message] = field(default_factory=list)


class BatchDelivery:
    """Mixin for a :class:`faust.App`: topics whose records go to a batch handler."""

    batch_max_records: int = 4000
    batch_max_wait_s: float = 0.2

    @property
    def batch_handlers(self) -> dict[str, BatchHandler]:
        handlers = self.__dict__.get("_batch_handlers")
        if handlers is None:
            handlers = self.__dict__["_batch_handlers"] = {}
        return handlers

    def batch_agent(self, topic: faust.TopicT) -> Callable[[BatchHandler], BatchHandler]:
        """Decorator: ``fn(messages)`` receives every record of ``topic``, a partition's batch at a time."""

        def register(fn: BatchHandler) -> BatchHandler:
            for name in topic.topics:
                if name in self.batch_handlers:
                    raise ValueError(f"topic {name!r} already has a batch handler")
                self.batch_handlers[name] = fn
            self.topics.add(topic)  # type: ignore[attr-defined]  # subscribe, as an agent would
            return fn

        return register


class FastDrainConsumer(faust_aiokafka.Consumer):
    async def _drain_messages(self, fetcher: Any) -> None:  # noqa: ANN401
        callback = self.callback
        read_offset = self._read_offset
        immediate = self._delivers_without_waiting
        acks_enabled_for = self.app.topics.acks_enabled_for
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        max_records = getattr(self.app, "batch_max_records", 4000)
        max_wait = getattr(self.app, "batch_max_wait_s", 0.2)
        pending: dict[TP, _Batch] = {}
        since_yield = 0
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                records = self.getmany(timeout=max_wait if pending else 1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield >= _YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = message.offset
                    batch = pending.get(tp)
                    if batch is not None and batch.generation != self.app.consumer_generation_id:
                        # Collected before a rebalance, which sought back to the committed offset.
                        del pending[tp]
                        batch = None
                    last = batch.messages[-1].offset if batch else read_offset[tp]
                    if last is not None and offset < last:
                        continue  # already delivered before a seek
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)  # e.g. compacted or aborted records
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    handler = handlers.get(tp.topic)
                    if handler is not None:
                        if batch is None:
                            batch = pending[tp] = _Batch(handler, self.app.consumer_generation_id, time.monotonic())
                        batch.messages.append(message)
                        if len(batch.messages) >= max_records:
                            await self._deliver(tp, pending.pop(tp))
                        continue
                    if immediate(tp):
                        await callback(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                now = time.monotonic()
                for tp in [tp for tp, b in pending.items() if now - b.since >= max_wait]:
                    await self._deliver(tp, pending.pop(tp))
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise

    async def _deliver(self, tp: TP, batch: _Batch) -> bool:
        """Hand ``batch`` to its handler, flush the state it wrote, then acknowledge its offsets."""
        if not self._same_flow(batch.generation):
            log.info("dropping %d records of %s collected before a rebalance", len(batch.messages), tp)
            return False
        try:
            batch.handler(batch.messages)
        except Exception:
            log.exception("batch handler failed on %d records of %s; the worker stops", len(batch.messages), tp)
            raise
        await self._flush_producer()
        if not self._same_flow(batch.generation):
            return False  # the partition moved while flushing: its new owner re-reads from the commit
        for message in batch.messages:
            self.ack(message)
        self._read_offset[tp] = batch.messages[-1].offset
        return True

    async def _flush_producer(self) -> None:
        """Wait until every buffered changelog write is acknowledged by Kafka."""
        producer = self.app.producer
        await producer.flush()
        while producer.buffer.size and not self.should_stop:  # flush() gives up after 0.1 s without progress
            await producer.flush()

    def _same_flow(self, generation: int) -> bool:
        return (self.flow_active and not self.suspend_flow.is_set()
                and self.app.consumer_generation_id == generation)

    def _delivers_without_waiting(self, tp: Any) -> bool:  # noqa: ANN401
        """Whether the conductor can deliver a record of ``tp`` without awaiting anything."""
        if self.suspend_flow.is_set():
            return False
        buffer = self.app.producer.buffer
        if buffer.size > buffer.max_messages:  # the conductor would wait for it to drain
            return False
        return not any(channel.queue.full() for channel in self.app.topics._tp_index.get(tp, ()))


class FastDrainTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = FastDrainConsumer
