"""How a BentoML service of this project is started: one command line and environment for all."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from driftstream.offline_env import offline_env_vars
from driftstream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def serve_command(target: str, host: str, port: int) -> list[str]:
    """``bentoml serve`` of ``target`` (``module:Class``) on ``host:port`` from the repository root."""
    return [sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port),
            "--working-dir", str(ROOT)]


def serve_env(settings: Settings, service: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a service process; each service keeps its own BentoML home (metrics files)."""
    env = dict(os.environ)
    env.update(offline_env_vars(settings.abs_state_dir))
    env["BENTOML_HOME"] = str(settings.abs_state_dir / "bentoml" / service)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env["DRIFTSTREAM_STATE_DIR"] = str(settings.abs_state_dir)
    env["DRIFTSTREAM_HOST"] = settings.host
    env.update(extra)
    return env
