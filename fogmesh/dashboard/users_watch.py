"""When to read the users file again, and what a new reading changes. Pure:
the dashboard stats the file (on every request and every tick: one system
call) and hands the stamp and the time in.

Why: the file used to be read once, at start, so ``fogmesh dashboard users
remove op-1`` left op-1 logged in, pressing relays, until a restart (issue
#37). Now a stamp that differs from the one last read (inode, size, mtime:
``users add|remove`` writes a new file and renames it over the old, so the
inode alone tells) means read it again, at once; and every ``recheck_s``
it is read anyway (an editor that rewrites the file in place within one
mtime tick, at the same size). What a reading changed decides which
sessions end (:meth:`.sessions.Sessions.keep_only`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from fogmesh.dashboard.auth import User

RECHECK_S = 30.0


@dataclass(frozen=True)
class FileStamp:
    inode: int
    size: int
    mtime_ns: int


@dataclass
class UsersWatch:
    recheck_s: float = RECHECK_S
    _stamp: FileStamp | None = None
    _read_at: float | None = None            # None: never read

    def reload(self, stamp: FileStamp | None, now: float) -> bool:
        """Read the file again? ``stamp`` None: there is no file."""
        if self._read_at is None:
            return True
        return stamp != self._stamp or now - self._read_at >= self.recheck_s

    def read(self, stamp: FileStamp | None, now: float) -> None:
        """The file was read (or found damaged: then the same stamp is not read again until it changes)."""
        self._stamp, self._read_at = stamp, now


def changes(old: Mapping[str, User], new: Mapping[str, User]) -> list[str]:
    """What a new reading of the users file changed, for the log."""
    out = []
    for name, user in old.items():
        now = new.get(name)
        if now is None:
            out.append(f"{name} is no longer in the users file")
        elif now.role != user.role:
            out.append(f"{name} is now {'an' if now.role == 'operator' else 'a'} {now.role}")
        elif now.password_hash != user.password_hash:
            out.append(f"{name} has a new password")
    out.extend(f"{name} ({new[name].role}) was added" for name in new if name not in old)
    return out
