"""How launchers stop their child processes: SIGTERM first, SIGKILL after the grace."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fogmesh.broker.processes import stop_processes

pytestmark = pytest.mark.timeout(30)

# Children that stay up (time.sleep: they are what is waited on, not a wait).
IGNORES_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                "time.sleep(60)")  # a child that stays up


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_a_process_that_honours_sigterm_exits_with_it() -> None:
    proc = _child("import time; print('ready', flush=True); time.sleep(60)")  # a child that stays up
    stop_processes([proc], timeout=5)
    assert proc.returncode == -15


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _child(IGNORES_TERM)
    started = time.monotonic()
    stop_processes([proc], timeout=0.5)
    assert proc.returncode == -9
    assert time.monotonic() - started < 5


def test_exited_and_missing_processes_are_skipped() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stop_processes([done, None])
    assert done.returncode == 0
