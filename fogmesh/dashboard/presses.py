"""The audit trail of actuator presses: who pressed what, when, and what came
of it. Pure: the dashboard feeds it the presses and what the broker carries
back, with ``now``; it hands back finished audit records to publish.

What came of a press: the actuator publishes its state (retained, live)
after every command it applies, and a dead letter naming the command's id
for one it refuses (an unknown actuator, a bad command). The first of those
for the pressed actuator settles the press; none within
:data:`ANSWER_WITHIN_S` is "no answer" (the actuator is offline, or its
device may not be reached). The dashboard sends no ``reply_to``: a device's
login under ``broker.secure`` may not publish on another login's replies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

ANSWER_WITHIN_S = 5.0
PENDING_KEPT = 200


@dataclass
class Press:
    record: dict[str, Any]        # the audit record, but for its result
    device: str
    actuator: str
    command_id: str
    due: float


@dataclass
class Presses:
    answer_within_s: float = ANSWER_WITHIN_S
    _pending: deque[Press] = field(default_factory=deque)

    def pressed(self, *, who: str, role: str, address: str, device: str, actuator: str,
                command: dict[str, Any], wall: float, now: float) -> None:
        """A command went out; its outcome is awaited."""
        record = {"ts": round(wall, 3), "who": who, "role": role, "from": address, "device": device,
                  "actuator": actuator, "command": command}
        self._pending.append(Press(record, device, actuator, str(command.get("id", "")),
                                   now + self.answer_within_s))
        while len(self._pending) > PENDING_KEPT:      # bounded: the oldest goes out unanswered
            self._pending.popleft()

    @staticmethod
    def finished_now(*, who: str, role: str, address: str, device: str, actuator: str,
                     command: dict[str, Any], wall: float, result: dict[str, Any]) -> dict[str, Any]:
        """The record of a press settled at once (refused, or not sent)."""
        return {"ts": round(wall, 3), "who": who, "role": role, "from": address, "device": device,
                "actuator": actuator, "command": command, "result": result}

    def on_state(self, device: str, actuator: str, state: str) -> list[dict[str, Any]]:
        """The actuator reported its state (a live message, not a retained one)."""
        for press in self._pending:
            if press.device == device and press.actuator == actuator:
                self._pending.remove(press)
                return [{**press.record, "result": {"status": "done", "state": state}}]
        return []

    def on_dead_letter(self, command_id: str | None, code: str | None, message: str | None) -> list[dict[str, Any]]:
        """A dead letter naming a pressed command's id: the device refused it."""
        if not command_id:
            return []
        for press in self._pending:
            if press.command_id == command_id:
                self._pending.remove(press)
                return [{**press.record, "result": {"status": "error", "code": code, "message": message}}]
        return []

    def due(self, now: float) -> list[dict[str, Any]]:
        """Presses with no answer in time."""
        out = []
        while self._pending and self._pending[0].due <= now:
            press = self._pending.popleft()
            out.append({**press.record, "result": {
                "status": "no answer",
                "message": f"the actuator did not report its state within {self.answer_within_s:g} s"}})
        return out

    def __len__(self) -> int:
        return len(self._pending)
