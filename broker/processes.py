"""Stopping child processes (brokers, agents, bridges) the way an init system
would: SIGTERM to all of them first, so they shut down in parallel and publish
what they must on the way out, then SIGKILL whatever is still there after the
grace period. One place, so every launcher and test harness stops alike."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable


def stop_processes(procs: Iterable[subprocess.Popen | None], timeout: float = 10.0) -> None:
    """Terminate every running process in ``procs``, wait up to ``timeout``
    seconds for each, and kill the ones that did not exit."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for p in running:
        p.terminate()
    for p in running:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
