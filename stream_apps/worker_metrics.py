"""The stream workers' Prometheus metrics. Names are fixed: dashboards and alerts use them.

Label sets stay bounded: a model, a feature of the reference profile, a topic, a
quantile or a reason class; never a request or a user.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_PROCESSED = Counter("driftstream_events_processed", "Events accepted into windows", ["model"])
WINDOW_EVENTS = Gauge("driftstream_window_events", "Events in the latest closed hopping window", ["model"])
CONFIDENCE_QUANTILE = Gauge(
    "driftstream_confidence_quantile", "Confidence quantile of the latest closed window", ["model", "quantile"]
)
LOW_CONFIDENCE_RATIO = Gauge(
    "driftstream_low_confidence_ratio", "Share of predictions below the low-confidence threshold", ["model"]
)
FEATURE_DRIFT_SCORE = Gauge(
    "driftstream_feature_drift_score", "Drift statistic of a feature (KS D or JS distance)", ["model", "feature"]
)
FEATURE_DRIFT_PVALUE = Gauge("driftstream_feature_drift_pvalue", "p-value of the feature's drift test",
                             ["model", "feature"])
DRIFT_DETECTED = Gauge("driftstream_drift_detected", "1 when the feature drifted after false-alarm control",
                       ["model", "feature"])
MODEL_DRIFT_DETECTED = Gauge("driftstream_model_drift_detected", "1 when any feature of the model drifted",
                             ["model"])
EVENT_FRESHNESS = Gauge("driftstream_event_freshness_seconds",
                        "Now minus the event time of the newest processed event", ["model"])
CONSUMER_LAG = Gauge("driftstream_consumer_lag_messages", "Messages behind the end of the topic", ["topic"])
LATE_EVENTS_DROPPED = Counter("driftstream_late_events_dropped", "Events later than the grace period", ["model"])
REFERENCE_MISSING = Gauge("driftstream_reference_missing", "1 while the model's reference profile is missing",
                          ["model"])
WINDOWS_CLOSED = Counter("driftstream_windows_closed", "Hopping windows closed and scored", ["model"])
WINDOW_STAT = Gauge("driftstream_window_stat", "Other per-window statistics (rates, means)", ["model", "stat"])
