"""Sub-commands of the pipeline's stages (services, workers, traffic, reports)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the stage commands to the ``driftstream`` parser."""
