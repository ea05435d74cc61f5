"""The serving path the precision benches measure against, ``today``: fp32 on CPU with the image
encoder in NCHW, as the predictor ran before precision modes existed (issue 13's starting point)."""

from __future__ import annotations


def today_plan():
    """The :class:`clmlf.serving.precision.PrecisionPlan` of ``today``."""
    from clmlf.serving.precision import PrecisionPlan

    return PrecisionPlan("fp32", "fp32", "cpu", "the path before precision modes", channels_last=False)
