"""Stream processors: the Faust apps and the pure window and drift logic they call.

The pure modules (no Kafka, no Faust) are small and independent:

- :mod:`stream_apps.windows`: event-time hopping/tumbling windows, panes, watermark and lateness.
- :mod:`stream_apps.value_sample`: bounded, mergeable sample (exact, then reservoir).
- :mod:`stream_apps.summary_stats`: mergeable count/mean/std/min/max.
- :mod:`stream_apps.ks_test`: two-sample Kolmogorov-Smirnov test.
- :mod:`stream_apps.categorical_drift`: chi-square drift test with a clustering correction.
- :mod:`stream_apps.false_alarm_control`: Benjamini-Hochberg, persistence, alpha from a budget.
- :mod:`stream_apps.reference_profile`: the training reference a window is compared with.
- :mod:`stream_apps.detector_window`, :mod:`stream_apps.recommender_window`: window accumulators.
"""
