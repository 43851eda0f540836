"""Per-device submission rate limits: a token bucket per device. Pure: ``now``
comes in; the buckets are bounded (least recently seen devices are forgotten),
so a flood of made-up device ids cannot grow memory either."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``rate`` tasks/s per device with bursts of ``burst`` (default 2 s worth)."""

    def __init__(self, rate: float, *, burst: float | None = None, max_devices: int = 10_000) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self.max_devices = max_devices
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, device: str, now: float) -> bool:
        b = self._buckets.pop(device, None)
        if b is None:
            b = _Bucket(self.burst, now)
        else:
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
        self._buckets[device] = b
        while len(self._buckets) > self.max_devices:
            self._buckets.popitem(last=False)
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False
