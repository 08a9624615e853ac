"""Start, identify and stop the processes the stack owns.

A pid file records the pid *and* the kernel start time of the process, so ``down``
never signals a recycled pid that now belongs to somebody else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests


class StackError(RuntimeError):
    """A component cannot start; the message names the component and the fix."""


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) follows the parenthesised command name, which may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int
    command: list[str]

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        if ticks is None or ticks != self.start_ticks:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"


def read_pid(pid_file: Path) -> PidRecord | None:
    try:
        data = json.loads(pid_file.read_text())
        return PidRecord(int(data["pid"]), int(data["start_ticks"]), list(data["command"]))
    except (OSError, ValueError, KeyError):
        return None


def spawn(command: Sequence[str], *, pid_file: Path, log_file: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> PidRecord:
    """Start ``command`` in its own session, logging to ``log_file``; record it in ``pid_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
    ticks = _start_ticks(proc.pid) or 0
    rec = PidRecord(proc.pid, ticks, list(command))
    pid_file.write_text(json.dumps({"pid": rec.pid, "start_ticks": rec.start_ticks, "command": rec.command}))
    return rec


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``url`` answers 200 within ``timeout_s``."""
    try:
        return requests.get(url, timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def wait_ready(rec: PidRecord, ready: Callable[[], bool], *, name: str, log_file: Path, timeout_s: float,
               poll_s: float = 0.3) -> None:
    """Return once ``ready()``; StackError with the log's tail if the process exits first, or on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not rec.alive():
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise StackError(f"{name}: exited during start-up. Log {log_file}:\n{tail}")
        if ready():
            return
        if time.monotonic() >= deadline:
            raise StackError(f"{name}: not healthy after {timeout_s:.0f}s; see {log_file}")
        time.sleep(poll_s)


def descendants(pid: int) -> list[PidRecord]:
    """Every live descendant of ``pid`` (servers such as BentoML start workers in new sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[PidRecord] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        ticks = _start_ticks(child)
        if ticks is not None:
            out.append(PidRecord(child, ticks, []))
            todo.extend(children.get(child, []))
    return out


def stop(rec: PidRecord, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL after ``timeout_s``; then any
    descendant that left the group (and so escaped the group signal) the same way."""
    if not rec.alive():
        return
    strays = [d for d in descendants(rec.pid) if _pgid(d.pid) not in (rec.pid, None)]
    _stop_group(rec, timeout_s)
    for d in strays:
        if d.alive():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(d.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline and d.alive():
                    time.sleep(0.1)
                if not d.alive():
                    break


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _stop_group(rec: PidRecord, timeout_s: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(rec.pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(rec.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(rec.pid)
            if not rec.alive():
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (what ``down`` must leave empty)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
