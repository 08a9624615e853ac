"""The durable spool: order, persistence, bounds, torn writes and batched fsync, on plain files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from producers import spool as spool_mod
from producers.spool import Position, Spool, SpoolRecord


def _rec(i: int, size: int = 10, key: bytes | None = b"k") -> SpoolRecord:
    return SpoolRecord("topic.a" if i % 2 else "topic.b", key, str(i).encode().ljust(size, b"."))


def _values(batch: list[tuple[SpoolRecord, Position]]) -> list[bytes]:
    return [r.value for r, _ in batch]


def test_fifo_order_and_cursor_survive_reopen(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(10):
        assert s.append(_rec(i))
    batch = s.read(4)
    assert _values(batch) == [_rec(i).value for i in range(4)]
    assert [r.topic for r, _ in batch] == [_rec(i).topic for i in range(4)]
    s.commit(batch[-1][1])
    assert s.pending_records == 6
    s.close()

    s = Spool(tmp_path, max_bytes=1 << 20)
    assert s.pending_records == 6
    assert _values(s.read(100)) == [_rec(i).value for i in range(4, 10)]
    assert s.append(_rec(10))
    assert _values(s.read(100))[-1] == _rec(10).value
    s.close()


def test_keys_none_and_empty_are_distinct(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    s.append(SpoolRecord("t", None, b"a"))
    s.append(SpoolRecord("t", b"", b""))
    (r1, _), (r2, _) = s.read(2)
    assert (r1.key, r1.value, r2.key, r2.value) == (None, b"a", b"", b"")
    s.close()


def test_segments_roll_and_are_deleted_once_consumed(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    for i in range(50):
        s.append(_rec(i))
    assert len(list(tmp_path.glob("*.seg"))) > 5
    seen: list[bytes] = []
    for _ in range(100):  # bounded drain loop
        batch = s.read(7)
        if not batch:
            break
        seen += _values(batch)
        s.commit(batch[-1][1])
    assert seen == [_rec(i).value for i in range(50)]
    assert s.empty and s.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1 and s.disk_bytes == 0
    s.close()


def test_full_spool_refuses_and_recovers_space_after_commit(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=2000, segment_bytes=500)
    accepted = 0
    for i in range(1000):
        if not s.append(_rec(i, size=40)):
            break
        accepted += 1
    assert 0 < accepted < 1000
    assert s.disk_bytes <= 2000
    assert not s.append(_rec(0, size=40)), "a full spool must refuse"
    batch = s.read(accepted)
    assert len(batch) == accepted
    s.commit(batch[-1][1])
    assert s.append(_rec(1, size=40)), "space must come back once consumed"
    s.close()


def test_torn_tail_is_cut_off_on_reopen(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        s.append(_rec(i))
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    whole = spool_mod.encode_record(_rec(3))
    with open(seg, "ab") as f:
        f.write(whole[: len(whole) // 2])  # a crash in the middle of an append

    s = Spool(tmp_path, max_bytes=1 << 20)
    assert s.lost_bytes == len(whole) // 2
    assert s.pending_records == 3
    assert s.append(_rec(4))
    assert _values(s.read(10)) == [_rec(i).value for i in (0, 1, 2, 4)]
    s.close()


def test_corrupt_record_ends_the_valid_data(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(4):
        s.append(_rec(i))
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    frame = len(spool_mod.encode_record(_rec(0)))
    data[2 * frame + 12] ^= 0xFF  # flip a payload byte of the third record
    seg.write_bytes(bytes(data))
    s = Spool(tmp_path, max_bytes=1 << 20)
    assert _values(s.read(10)) == [_rec(0).value, _rec(1).value]
    s.close()


def test_read_limits_and_oversized_single_record(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    s.append(_rec(0, size=5000))
    s.append(_rec(1))
    s.append(_rec(2))
    first = s.read(10, max_bytes=100)
    assert _values(first) == [_rec(0, size=5000).value], "one record is returned even above max_bytes"
    assert len(s.read(2)) == 2
    s.close()


def test_commit_is_idempotent_and_never_backwards(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        s.append(_rec(i))
    batch = s.read(3)
    s.commit(batch[1][1])
    s.commit(batch[1][1])
    assert s.pending_records == 1
    with pytest.raises(ValueError, match="backwards"):
        s.commit(batch[0][1])
    s.close()


def test_unreadable_cursor_replays_from_the_oldest_record(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        s.append(_rec(i))
    s.commit(s.read(1)[0][1])
    s.close()
    (tmp_path / "cursor.json").write_text("{not json")
    s = Spool(tmp_path, max_bytes=1 << 20)
    assert s.pending_records == 3, "at-least-once: an unknown cursor means replaying everything left"
    s.close()


def test_fsync_runs_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    s = Spool(tmp_path, max_bytes=1 << 20, sync_bytes=1 << 20, sync_interval_s=3600)
    monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    for i in range(200):
        s.append(_rec(i))
    s.maybe_sync()
    assert calls == [], "no fsync per append, nor before the interval"
    s.sync_interval_s = 0.0
    s.maybe_sync()
    assert len(calls) == 1
    s2 = Spool(tmp_path / "b", max_bytes=1 << 20, sync_bytes=100, sync_interval_s=3600)
    calls.clear()
    for i in range(20):
        s2.append(_rec(i))
    assert 0 < len(calls) < 20, "a sync every ~sync_bytes, not every append"
    s.close()
    s2.close()


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_bytes": 10, "segment_bytes": 0},
                                    {"max_bytes": 10, "sync_bytes": -1}])
def test_bad_parameters(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Spool(tmp_path, **kwargs)


def test_read_needs_a_positive_count(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=100)
    with pytest.raises(ValueError, match="max_records"):
        s.read(0)
    s.close()
