"""driftstream: event-driven streaming drift monitoring for ML services."""

__version__ = "0.1.0"
