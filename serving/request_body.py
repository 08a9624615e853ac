"""Reading a request body once, bounded, in ASGI middleware, and handing it on.

The services' guards (``UploadGuard``, ``JsonBodyGuard``) read the body themselves so that
an oversized or malformed request is refused before BentoML parses it; the app behind them
then receives the same bytes through :func:`replay_body`.

>>> import asyncio
>>> def client(*chunks):
...     messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
...                 for i, c in enumerate(chunks)]
...     async def receive():
...         return messages.pop(0)
...     return receive
>>> asyncio.run(read_bounded_body(client(b"ab", b"cd"), limit=10))
(b'abcd', False)
>>> asyncio.run(read_bounded_body(client(b"ab", b"cd", b"ef"), limit=3))
(b'abcd', True)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]


async def read_bounded_body(receive: Receive, limit: int) -> tuple[bytes, bool] | None:
    """``(body, too_large)``; reading stops at the first chunk that takes it past ``limit``.

    ``None`` when the client disconnected first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            return b"".join(chunks), True
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` as one message, then defers to the client's ``receive``."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later reads wait for the client's disconnect

    return replay
