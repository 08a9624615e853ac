"""A Faust transport whose consumer hands each fetched record to the streams directly.

faust-streaming 0.15 delivers every record with ``wait_first(callback(message),
suspend_flow.wait())``, racing the delivery against a rebalance. ``wait_first`` creates
four asyncio tasks per record, which caps one worker near 2,000 records/s on this
project's machines, whatever the app does with them (``benchmarks/stream_throughput.py``).

:class:`FastDrainTransport` keeps Faust's fetcher, acks, gaps, commits and rebalancing, and
changes one thing: when delivering a record cannot wait (the flow is not suspended, the
record's stream buffers have room and the producer buffer is not over its limit), it is
delivered with a plain ``await``. Otherwise it races the delivery against a suspension
exactly as Faust does, so a delivery that waits across a rebalance is abandoned instead of
landing in a stream whose buffer the rebalance already cleared: a record delivered after
its partition moved would let a window skip the records cleared before it.

Use it through :func:`stream_apps.window_pipeline.make_app`; every stream app does.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka

_YIELD_EVERY = 1000  # records between explicit yields to the event loop (health checks, timers)


class FastDrainConsumer(faust_aiokafka.Consumer):
    async def _drain_messages(self, fetcher: Any) -> None:  # noqa: ANN401
        callback = self.callback
        read_offset = self._read_offset
        immediate = self._delivers_without_waiting
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                records = self.getmany(timeout=1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield >= _YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # already delivered before a seek
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)  # e.g. compacted or aborted records
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if immediate(tp):
                        await callback(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise


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
