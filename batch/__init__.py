"""Batch jobs on archived windows: drift reports, heatmaps, explanations."""
