"""The one percentile rule the figures share (the dashboard's latency chart
and every benchmark table): the nearest rank, so a p99 is a latency that was
really measured. Pure."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The value at quantile ``q`` (0..1) of ``values``, which must not be empty."""
    s = sorted(values)
    if not s:
        raise ValueError("percentile of no values")
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]
