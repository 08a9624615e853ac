"""Direct Kafka sends not yet resolved, and the failed ones, released in publish order.

librdkafka reports a purged or timed-out record whenever its broker thread gets to it, so
the reports of one outage can arrive out of the order the records were produced in. The
publisher must spool failed records before any newer event, in publish order, or a key's
events would reach Kafka out of order after the replay. :class:`InFlightSends` numbers
each send; failures wait in it until no send is unresolved, then come out sorted.

>>> sends = InFlightSends()
>>> a, b, c = sends.sent(), sends.sent(), sends.sent()
>>> sends.failed(c, "c"); sends.failed(a, "a")
>>> sends.unresolved, sends.release()      # b may still fail: nothing is released yet
(1, [])
>>> sends.succeeded(b); sends.release()
['a', 'c']
>>> sends.holding
False
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class InFlightSends(Generic[T]):
    def __init__(self) -> None:
        self._next = 0
        self.unresolved = 0
        self._failed: list[tuple[int, T]] = []

    def sent(self) -> int:
        """Number one more send; its report must come back as :meth:`succeeded` or :meth:`failed`."""
        seq = self._next
        self._next += 1
        self.unresolved += 1
        return seq

    def succeeded(self, seq: int) -> None:
        self.unresolved -= 1

    def failed(self, seq: int, record: T) -> None:
        self.unresolved -= 1
        self._failed.append((seq, record))

    def cancel(self, seq: int) -> None:
        """The send never happened, or its record is gone for good: nothing to wait for."""
        self.unresolved -= 1

    @property
    def failed_count(self) -> int:
        return len(self._failed)

    @property
    def holding(self) -> bool:
        """Whether newer records must wait: a send is unresolved or failures are not yet released."""
        return self.unresolved > 0 or bool(self._failed)

    def release(self, force: bool = False) -> list[T]:
        """The failed records in publish order, once no send is unresolved (or now, with ``force``)."""
        if not self._failed or (self.unresolved > 0 and not force):
            return []
        out = [record for _, record in sorted(self._failed, key=lambda pair: pair[0])]
        self._failed.clear()
        return out

    def forget_unresolved(self) -> None:
        """The producer that held the unresolved sends is gone: their reports will never come."""
        self.unresolved = 0
