"""apply_offline_env: variables, directories and the shipped font, idempotently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from driftstream.offline_env import _matplotlib_font, apply_offline_env, offline_env_vars


def test_sets_variables_dirs_and_font(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [*offline_env_vars(tmp_path), "OMP_WAIT_POLICY"]:
        monkeypatch.delenv(key, raising=False)  # restored after the test
    state = tmp_path / "state"
    apply_offline_env(state)
    assert os.environ["YOLO_OFFLINE"] == "1"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["BENTOML_DO_NOT_TRACK"] == "True"
    assert os.environ["DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY"] == "True"
    for key in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "BENTOML_HOME"):
        assert Path(os.environ[key]).is_dir() and Path(os.environ[key]).is_relative_to(state.resolve())
    font = state / "ultralytics" / "Ultralytics" / "Arial.ttf"
    assert font.read_bytes() == _matplotlib_font().read_bytes()

    before = font.stat().st_mtime_ns
    apply_offline_env(state)
    assert font.stat().st_mtime_ns == before
    assert offline_env_vars(state) == {key: os.environ[key] for key in offline_env_vars(state)}


def test_keeps_an_explicit_openmp_wait_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in offline_env_vars(tmp_path):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    apply_offline_env(tmp_path)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
