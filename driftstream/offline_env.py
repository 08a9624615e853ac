"""Offline switches for the ML libraries: nothing is fetched, every cache lives in the state dir.

``apply_offline_env(state_dir)`` sets the environment variables that stop Ultralytics,
BentoML and Deepchecks from going online and moves their config and cache directories under
``state_dir``. Ultralytics reads its variables when it is imported, so call this first.
It also ships the font Ultralytics would otherwise download (matplotlib's DejaVu Sans,
copied as ``Arial.ttf``). ``configure_ultralytics(state_dir)`` additionally switches off
Ultralytics' integrations and event sync and keeps its runs/weights/datasets dirs in the
state dir; it imports Ultralytics, so it is only for processes that use it anyway.

>>> env = offline_env_vars(Path("/srv/state"))
>>> env["YOLO_OFFLINE"], env["YOLO_CONFIG_DIR"], env["BENTOML_DO_NOT_TRACK"]
('1', '/srv/state/ultralytics', 'True')

Reference: https://docs.ultralytics.com/quickstart/#ultralytics-settings
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


def _matplotlib_font() -> Path:
    spec = importlib.util.find_spec("matplotlib")  # locate without importing matplotlib
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib is not installed; it provides the font Ultralytics needs offline")
    font = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not font.is_file():
        raise RuntimeError(f"matplotlib's DejaVuSans.ttf is missing at {font}")
    return font


def offline_env_vars(state_dir: Path) -> dict[str, str]:
    """The variables ``apply_offline_env`` sets, for passing to child processes."""
    state = Path(state_dir).resolve()
    return {
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(state / "ultralytics"),
        "MPLCONFIGDIR": str(state / "matplotlib"),
        "TORCHINDUCTOR_CACHE_DIR": str(state / "torchinductor"),
        "BENTOML_HOME": str(state / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY": "True",
    }


def apply_offline_env(state_dir: Path) -> None:
    """Set the offline variables in ``os.environ`` and create their directories (idempotent).

    Also sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already: on a shared 2-core machine,
    OpenMP threads that spin while waiting made torch training 5-10x slower (measured: 9-11 s
    vs 0.6-1.6 s per YOLOv8n step). OpenMP reads it when torch loads, so call this first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env = offline_env_vars(state_dir)
    for key in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "BENTOML_HOME"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    arial = Path(env["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf"
    if not arial.is_file():
        arial.parent.mkdir(parents=True, exist_ok=True)
        tmp = arial.with_suffix(".tmp")
        shutil.copyfile(_matplotlib_font(), tmp)
        tmp.replace(arial)  # atomic, so concurrent processes never see half a font
    # A service sets its own BENTOML_HOME (its Prometheus multiprocess files live there, and
    # two services sharing one directory would wipe and mix each other's metrics).
    os.environ.setdefault("BENTOML_HOME", env.pop("BENTOML_HOME"))
    Path(os.environ["BENTOML_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)


def configure_ultralytics(state_dir: Path) -> None:
    """``apply_offline_env`` plus Ultralytics settings: no integrations, no sync, dirs in the state dir."""
    apply_offline_env(state_dir)
    from ultralytics.utils import SETTINGS

    root = Path(state_dir).resolve() / "ultralytics"
    wanted = {key: False for key in _INTEGRATIONS}
    wanted |= {
        "sync": False,
        "runs_dir": str(root / "runs"),
        "weights_dir": str(root / "weights"),
        "datasets_dir": str(root / "datasets"),
    }
    if any(SETTINGS.get(key) != value for key, value in wanted.items()):
        SETTINGS.update(wanted)
