"""Waiting for a condition in tests, without fixed sleeps."""

import time


def wait_until(predicate, timeout=15, what="condition"):
    """The predicate's first true value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)      # the poll between two looks at the condition
    raise AssertionError(f"timed out waiting for {what}")
