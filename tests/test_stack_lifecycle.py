"""``up``/``down`` leave nothing behind; clear errors for a taken port or a missing binary."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from driftstream.settings import Settings
from driftstream.stack import process
from driftstream.stack import stack as stack_mod
from driftstream.stack.process import StackError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lone_settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", prometheus_port=_free_port(), alertmanager_port=_free_port())


def test_down_stops_exactly_what_up_started(tmp_path: Path) -> None:
    s = _lone_settings(tmp_path)
    names = ["prometheus", "alertmanager"]
    stack_mod.up(s, names, log=lambda _: None)
    st = stack_mod.status(s, names)
    assert all(x.healthy for x in st.values())
    pids = [x.pid for x in st.values()]
    assert all(process.group_members(p) for p in pids)

    stack_mod.down(s, names, log=lambda _: None)
    assert all(process.group_members(p) == [] for p in pids), "a process of the stack survived down"
    assert process.port_free(s.host, s.prometheus_port) and process.port_free(s.host, s.alertmanager_port)
    assert not any((s.abs_state_dir / "run").glob("*.pid"))
    assert all(not x.running for x in stack_mod.status(s, names).values())


def test_taken_port_names_component_and_fix(tmp_path: Path) -> None:
    s = _lone_settings(tmp_path)
    with socket.socket() as blocker:
        blocker.bind((s.host, s.prometheus_port))
        blocker.listen()
        with pytest.raises(StackError) as info:
            stack_mod.up(s, ["prometheus"], log=lambda _: None)
    msg = str(info.value)
    assert "prometheus" in msg and str(s.prometheus_port) in msg and "DRIFTSTREAM_PROMETHEUS_PORT" in msg


def test_missing_binary_names_component_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _lone_settings(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError) as info:
        stack_mod.up(s, ["alertmanager"], log=lambda _: None)
    assert "alertmanager" in str(info.value) and "make setup" in str(info.value)


def test_unknown_component_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="unknown component"):
        stack_mod.select(_lone_settings(tmp_path), ["nope"])
