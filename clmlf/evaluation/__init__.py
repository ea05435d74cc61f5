"""Evaluation: metrics and report, calibration, figures, probe analysis."""
