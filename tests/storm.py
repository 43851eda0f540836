"""Threads that call a client in a loop until told to stop (a publish storm),
for tests that must fail, not hang, when a call blocks for good: a thread
still inside its call after the bound is reported, never waited for."""

from __future__ import annotations

import threading
import time
from typing import Callable


class Storm:
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.calls = 0

    def run(self, name: str, step: Callable[[], object]) -> None:
        """Call ``step`` over and over on a thread of its own until :meth:`end`."""
        def loop() -> None:
            try:
                while not self.stopping.is_set():
                    step()
                    self.calls += 1
            except Exception as exc:       # reported by end(): a storm thread must not die unseen
                self.errors.append(f"{name}: {exc!r}")
        t = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def end(self, *, within: float) -> list[str]:
        """Stop; the names of the threads still inside a call after ``within`` s."""
        self.stopping.set()
        deadline = time.monotonic() + within
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]


def finishes(call: Callable[[], object], *, within: float) -> bool:
    """Run ``call`` on its own thread: whether it returned within ``within`` s
    (a client whose network thread is locked up never stops: its ``stop()``
    joins that thread)."""
    t = threading.Thread(target=call, name="finishing", daemon=True)
    t.start()
    t.join(within)
    return not t.is_alive()
