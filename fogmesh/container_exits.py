"""What a per-task container's end means for its task (pure): the table of
exit codes, OOM kills and signals, and the result read from its stdout.

=====================  ==============================================================
how it ended           the task
=====================  ==============================================================
exit 0                 its stdout, JSON, is the result (``no JSON`` error if it is not)
exit 2                 ``bad_args``: the kind refused the args (stderr is the message)
exit 125, 126, 127     the engine's own failure (125: the engine; 126, 127: the
                       command could not be run): when the engine's error names a
                       known cause, "no container could start: why; what to set"
                       (:mod:`fogmesh.container_diagnosis`)
exit 137, memory=      killed for memory: "out of memory? the kind's limit is ..."
exit 128+N             killed by signal N (named)
any other              "exited with N" and the last line of its stderr
no exit in time        "did not answer within T s; killed"
engine not runnable    "cannot start a container of IMAGE"
=====================  ==============================================================
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

from fogmesh.container_diagnosis import diagnose
from fogmesh.container_engine import Exited, NotStarted, RunOutcome, TimedOut
from fogmesh.errors import BadArgs, ContainerError

__all__ = ["BAD_ARGS", "ENGINE_FAILED", "OOM_KILLED", "meaning", "signal_name", "task_result"]

BAD_ARGS = 2
#: ``run``'s own exit statuses: the engine failed (125), the command could not be started (126, 127).
ENGINE_FAILED = (125, 126, 127)
#: 128 + SIGKILL: what the kernel's OOM killer (or a kill) leaves.
OOM_KILLED = 137
_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
            9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"}


def signal_name(code: int) -> str | None:
    """The signal an exit code 128+N says killed the process (``SIGKILL``,
    ``signal 40``); None for an ordinary exit."""
    if 128 < code < 128 + 65:
        return _SIGNALS.get(code - 128, f"signal {code - 128}")
    return None


def meaning(code: int, *, memory: str | None = None) -> str:
    """One exit code in words, as the table above reads it."""
    if code == 0:
        return "ok: its stdout is the result"
    if code == BAD_ARGS:
        return "bad args"
    if code in ENGINE_FAILED:
        return "the engine failed" if code == 125 else "the command could not be run"
    if code == OOM_KILLED and memory:
        return f"out of memory? the kind's limit is {memory}"
    signal = signal_name(code)
    return f"killed by {signal}" if signal else f"the kind failed (exit {code})"


def task_result(outcome: RunOutcome, *, image: str, engine: str, memory: str | None, timeout_s: float) -> Any:
    """The task's result, read from how its container ended; or its error
    (:class:`BadArgs` or :class:`ContainerError`), as the table says.
    ``engine``: podman or docker (or its path), how its errors read."""
    if isinstance(outcome, TimedOut):
        raise ContainerError(f"container of {image} did not answer within {timeout_s:g} s; killed")
    if isinstance(outcome, NotStarted):
        raise ContainerError(f"cannot start a container of {image}: {outcome.reason}")
    return _exited(outcome, image=image, engine=PurePath(engine).name, memory=memory)


def _exited(done: Exited, *, image: str, engine: str, memory: str | None) -> Any:
    code = done.code
    if code == 0:
        try:
            return json.loads(done.stdout)
        except (ValueError, RecursionError):
            raise ContainerError(f"container of {image} printed no JSON on stdout: {done.stdout[:120]!r}") from None
    if code == BAD_ARGS:
        raise BadArgs(done.stderr.strip()[-300:] or "the container refused the args")
    if code == OOM_KILLED and memory:
        raise ContainerError(f"container of {image} was killed (exit 137): out of memory? the kind's limit is "
                             f"{memory}")
    tail = (done.stderr.strip().splitlines()[-1:] or [""])[0]
    # the engine's own failure (its "Error: ..." line), not the kind's exit status?
    if code in ENGINE_FAILED and tail.startswith(("Error", "docker:")):
        d = diagnose(engine, done.stderr)
        if d.cause not in ("other", "no-command"):
            raise ContainerError(f"no container of {image} could start: {d.reason}; {d.fix}")
    signal = signal_name(code)
    how = f"{code} (killed by {signal})" if signal else str(code)
    raise ContainerError(f"container of {image} exited with {how}: {tail[:300]}")
