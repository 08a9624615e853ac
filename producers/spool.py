"""A bounded, durable, append-only spool of Kafka records: what a producer keeps while the broker is away.

Records (topic, key, value) are appended to numbered segment files under one directory and
read back in append order from a committed cursor. Each record is framed as
``length | crc32 | payload`` so a torn write at the tail (a crash mid-append) is detected and
cut off when the spool is reopened. Appends are plain ``write`` calls; ``fsync`` runs in
batches (every ``sync_bytes`` or ``sync_interval_s``), trading the last few milliseconds of
records on a power loss for microsecond appends. A segment is deleted once the cursor has
passed all of it, and the spool refuses records (``append`` returns False) beyond
``max_bytes`` on disk, so the caller can count what it drops.

The spool is not thread-safe: one thread owns it.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> spool = Spool(d, max_bytes=1 << 20)
>>> spool.append(SpoolRecord("t", b"k", b"first")), spool.append(SpoolRecord("t", None, b"second"))
(True, True)
>>> batch = spool.read(10)
>>> [r.value for r, _ in batch]
[b'first', b'second']
>>> spool.commit(batch[0][1])
>>> spool.close()
>>> reopened = Spool(d, max_bytes=1 << 20)
>>> [r.value for r, _ in reopened.read(10)], reopened.pending_records
([b'second'], 1)
>>> reopened.close()

Reference: the write-ahead-log framing of Kafka's own log segments and of LevelDB
(https://github.com/google/leveldb/blob/main/doc/log_format.md).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")  # payload length, crc32(payload)
_META = struct.Struct("<HI")  # topic length, key length (NO_KEY for None)
NO_KEY = 0xFFFFFFFF
_SUFFIX = ".seg"
_CURSOR = "cursor.json"


class SpoolRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes


class Position(NamedTuple):
    """Where a record ends: (segment number, byte offset after it)."""

    segment: int
    offset: int


def encode_record(record: SpoolRecord) -> bytes:
    """The framed bytes of one record.

    >>> len(encode_record(SpoolRecord("t", b"k", b"v")))
    17
    """
    topic = record.topic.encode()
    key = record.key if record.key is not None else b""
    payload = b"".join((_META.pack(len(topic), NO_KEY if record.key is None else len(key)), topic, key,
                        record.value))
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> SpoolRecord:
    topic_len, key_len = _META.unpack_from(payload)
    pos = _META.size
    topic = payload[pos:pos + topic_len].decode()
    pos += topic_len
    key = None
    if key_len != NO_KEY:
        key = payload[pos:pos + key_len]
        pos += key_len
    return SpoolRecord(topic, key, payload[pos:])


def _scan(data: bytes, start: int = 0) -> tuple[list[tuple[SpoolRecord, int]], int]:
    """Valid records of ``data`` from ``start`` and the offset where valid data ends."""
    out: list[tuple[SpoolRecord, int]] = []
    pos = start
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if length < _META.size or end > len(data):
            break
        payload = data[pos + _FRAME.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            out.append((_decode_payload(payload), end))
        except (struct.error, UnicodeDecodeError):
            break
        pos = end
    return out, pos


class Spool:
    """Durable FIFO of records in ``directory``, at most ``max_bytes`` of segment files on disk."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, *, segment_bytes: int | None = None,
                 sync_bytes: int = 256 * 1024, sync_interval_s: float = 0.05) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if segment_bytes is not None and segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be > 0, got {segment_bytes}")
        if sync_bytes < 0 or sync_interval_s < 0:
            raise ValueError("sync_bytes and sync_interval_s must be >= 0")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        # Small segments against the cap, so consumed space is given back early.
        self.segment_bytes = segment_bytes or min(8 << 20, max(64 << 10, max_bytes // 8))
        self.sync_bytes = sync_bytes
        self.sync_interval_s = sync_interval_s
        self.lost_bytes = 0  # torn or corrupt bytes cut off while opening
        self._sizes: dict[int, int] = {}
        self._unsynced = 0
        self._first_unsynced_at = 0.0
        self._fd: int | None = None
        self._recover()

    # --- opening ----------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}{_SUFFIX}"

    def _read_cursor(self) -> Position | None:
        try:
            data = json.loads((self.directory / _CURSOR).read_text())
            return Position(int(data["segment"]), int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _recover(self) -> None:
        segments = sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        cursor = self._read_cursor()
        if cursor is None or (segments and cursor.segment < segments[0]):
            cursor = Position(segments[0] if segments else 0, 0)
        self.pending_records = 0
        self.pending_bytes = 0
        for seg in segments:
            if seg < cursor.segment:  # consumed but not yet deleted (crash between commit and unlink)
                self._path(seg).unlink(missing_ok=True)
                continue
            data = self._path(seg).read_bytes()
            records, valid_end = _scan(data)
            if valid_end < len(data):
                self.lost_bytes += len(data) - valid_end
                log.warning("spool %s: cut %d torn/corrupt bytes off segment %d", self.directory,
                            len(data) - valid_end, seg)
                with open(self._path(seg), "r+b") as f:
                    f.truncate(valid_end)
                    os.fsync(f.fileno())
            self._sizes[seg] = valid_end
            start = cursor.offset if seg == cursor.segment else 0
            pending = [end for _, end in records if end > start]
            self.pending_records += len(pending)
            self.pending_bytes += valid_end - min(start, valid_end)
        self._cursor = cursor
        self._last_read: tuple[Position, dict[Position, int]] = (cursor, {})
        self._write_segment = max(segments[-1], cursor.segment) if segments else cursor.segment
        self._sizes.setdefault(self._write_segment, 0)
        self._open_writer()

    def _open_writer(self) -> None:
        self._fd = os.open(self._path(self._write_segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- state ------------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        """Bytes of all segment files, consumed parts of the oldest one included."""
        return sum(self._sizes.values())

    @property
    def empty(self) -> bool:
        return self.pending_records == 0

    # --- writing ----------------------------------------------------------------------

    def append(self, record: SpoolRecord) -> bool:
        """Append one record; False (nothing written) when it would exceed ``max_bytes``."""
        frame = encode_record(record)
        if self.disk_bytes + len(frame) > self.max_bytes:
            return False
        written = self._sizes[self._write_segment]
        if written and written + len(frame) > self.segment_bytes:
            self._roll()
        assert self._fd is not None, "spool is closed"
        os.write(self._fd, frame)
        self._sizes[self._write_segment] += len(frame)
        self.pending_records += 1
        self.pending_bytes += len(frame)
        if not self._unsynced:
            self._first_unsynced_at = time.monotonic()
        self._unsynced += len(frame)
        if self._unsynced >= self.sync_bytes:
            self.sync()
        return True

    def _roll(self) -> None:
        self.sync()
        assert self._fd is not None
        os.close(self._fd)
        self._write_segment += 1
        self._sizes[self._write_segment] = 0
        self._open_writer()

    def sync(self) -> None:
        """fsync what was appended since the last sync."""
        if self._unsynced and self._fd is not None:
            os.fsync(self._fd)
        self._unsynced = 0

    def maybe_sync(self) -> None:
        """fsync when the oldest unsynced append is older than ``sync_interval_s``."""
        if self._unsynced and time.monotonic() - self._first_unsynced_at >= self.sync_interval_s:
            self.sync()

    # --- reading ----------------------------------------------------------------------

    def read(self, max_records: int, max_bytes: int = 8 << 20) -> list[tuple[SpoolRecord, Position]]:
        """Up to ``max_records`` records from the cursor, each with the position after it (not consumed).

        At least one record is returned when any is pending, even if it alone exceeds ``max_bytes``.
        """
        if max_records <= 0:
            raise ValueError(f"max_records must be > 0, got {max_records}")
        out: list[tuple[SpoolRecord, Position]] = []
        seg, offset, total = self._cursor.segment, self._cursor.offset, 0
        while seg <= self._write_segment and len(out) < max_records and total < max_bytes:
            size = self._sizes.get(seg, 0)
            if offset >= size:
                seg, offset = seg + 1, 0
                continue
            with open(self._path(seg), "rb") as f:
                f.seek(offset)
                data = f.read(min(size - offset, max(max_bytes - total, _FRAME.size)))
                records, _ = _scan(data)
                if not records and len(data) >= _FRAME.size:  # one record larger than the budget
                    length, _crc = _FRAME.unpack_from(data)
                    f.seek(offset)
                    records, _ = _scan(f.read(_FRAME.size + length))
            if not records:
                break
            for rec, end in records[: max_records - len(out)]:
                out.append((rec, Position(seg, offset + end)))
            total += out[-1][1].offset - offset
            offset = out[-1][1].offset
        self._last_read = (self._cursor, {pos: i + 1 for i, (_, pos) in enumerate(out)})
        return out

    def commit(self, position: Position) -> None:
        """Consume every record up to ``position``; delete segments left behind; persist the cursor."""
        if position < self._cursor:
            raise ValueError(f"cannot commit backwards: {position} < {self._cursor}")
        if position == self._cursor:
            return
        read_from, counts = self._last_read
        consumed = counts.get(position) if read_from == self._cursor else None
        if consumed is None:
            consumed = self._count_between(self._cursor, position)
        consumed_bytes = 0
        seg, offset = self._cursor
        while seg < position.segment:
            consumed_bytes += self._sizes.get(seg, 0) - offset
            seg, offset = seg + 1, 0
        consumed_bytes += position.offset - offset
        self._cursor = position
        self._last_read = (position, {})
        self.pending_records -= consumed
        self.pending_bytes -= consumed_bytes
        self._write_cursor()
        for old in [s for s in self._sizes if s < position.segment]:
            self._path(old).unlink(missing_ok=True)
            del self._sizes[old]
        if self.pending_records == 0 and position.segment == self._write_segment:
            self._restart_empty()

    def _count_between(self, start: Position, stop: Position) -> int:
        count = 0
        seg, offset = start
        while seg <= stop.segment:
            end = stop.offset if seg == stop.segment else self._sizes.get(seg, 0)
            if end > offset:
                with open(self._path(seg), "rb") as f:
                    f.seek(offset)
                    count += len(_scan(f.read(end - offset))[0])
            seg, offset = seg + 1, 0
        return count

    def _restart_empty(self) -> None:
        # Everything is consumed: start a fresh segment so the disk space comes back now.
        assert self._fd is not None
        os.close(self._fd)
        old = self._write_segment
        self._write_segment += 1
        self._sizes = {self._write_segment: 0}
        self._cursor = Position(self._write_segment, 0)
        self._last_read = (self._cursor, {})
        self._open_writer()
        self._write_cursor()
        self._path(old).unlink(missing_ok=True)
        self._unsynced = 0
        self.pending_bytes = 0

    def _write_cursor(self) -> None:
        tmp = self.directory / f"{_CURSOR}.tmp"
        tmp.write_text(json.dumps({"segment": self._cursor.segment, "offset": self._cursor.offset}))
        os.replace(tmp, self.directory / _CURSOR)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        return (f"Spool({str(self.directory)!r}, pending_records={self.pending_records}, "
                f"pending_bytes={self.pending_bytes}, disk_bytes={self.disk_bytes})")
