"""The project's own processes (services, stream and batch workers) in the local stack."""

from __future__ import annotations

from driftstream.stack.components import PythonComponent
from driftstream.stack.stack import APP_COMPONENTS

__all__ = ["APP_COMPONENTS", "PythonComponent"]
