"""Who may see the dashboard and who may press its buttons: the users file
and password hashes.

Why its own logins: the dashboard's buttons move relays, and an operator who
serves it on the LAN (``--host 0.0.0.0``) would otherwise hand them to anyone
on that LAN. The broker login stays in the dashboard process; these logins
are the people in front of the page. Two roles: ``viewer`` (sees everything)
and ``operator`` (also presses buttons).

Sessions live in :mod:`.sessions`, the limits on login attempts in
:mod:`.attempts` (both pure).

The users file is one line per user, ``name:role:hash``, readable only by its
owner (0600), where ``hash`` is ``scrypt$N$r$p$salt$key`` (stdlib scrypt:
memory-hard, no extra dependency; N = 2**15, ~50 ms per check).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from fogmesh.errors import FogmeshError

ROLES = ("viewer", "operator")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8


class UsersFileError(FogmeshError):
    """The users file cannot be read or written, or a name, role or password is unusable."""


def default_users_file() -> Path:
    """``$FOGMESH_DASHBOARD_USERS``, else ``~/.config/fogmesh/dashboard-users``."""
    env = os.environ.get("FOGMESH_DASHBOARD_USERS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "fogmesh" / "dashboard-users"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=128 * SCRYPT_N * SCRYPT_R * 2, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Constant-time: the comparison takes as long whatever matches."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.urlsafe_b64decode(key)
        got = hashlib.scrypt(password.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=128 * int(n) * int(r) * 2, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str


class Users:
    """One reading of the users file (a running dashboard reads it again as
    soon as it changes: :mod:`.users_watch`)."""

    def __init__(self, users: dict[str, User], path: Path | None = None) -> None:
        self.users = users
        self.path = path

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls({}, path)
        except OSError as exc:
            raise UsersFileError(f"cannot read the users file {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise UsersFileError(f"the users file {path} is not text ({exc.reason} at byte {exc.start})") from exc
        users: dict[str, User] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split(":", 2)
            if len(parts) != 3 or parts[1] not in ROLES or not NAME.match(parts[0]):
                raise UsersFileError(f"{path}, line {n}: expected name:role:hash with role viewer or operator")
            users[parts[0]] = User(parts[0], parts[1], parts[2])
        return cls(users, path)

    def __bool__(self) -> bool:
        return bool(self.users)

    def __len__(self) -> int:
        return len(self.users)

    def verify(self, name: str, password: str) -> User | None:
        """The user, if the password is theirs. An unknown name costs as much
        as a wrong password (no telling names apart by the time taken)."""
        user = self.users.get(name)
        if user is None:
            check_password(password, _DUMMY_HASH)
            return None
        return user if check_password(password, user.password_hash) else None

    def with_user(self, name: str, role: str, password: str) -> Users:
        if not NAME.match(name):
            raise UsersFileError(f"user name {name!r}: 1-64 letters, digits and . _ @ -")
        if role not in ROLES:
            raise UsersFileError(f"role {role!r}: one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise UsersFileError(f"the password needs at least {MIN_PASSWORD} characters")
        return Users({**self.users, name: User(name, role, hash_password(password))}, self.path)

    def without_user(self, name: str) -> Users:
        if name not in self.users:
            raise UsersFileError(f"no user {name!r} in {self.path}")
        return Users({k: v for k, v in self.users.items() if k != name}, self.path)

    def save(self) -> None:
        """Written to a new file (0600) then renamed over the old: never half a file."""
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("# fogmesh dashboard users (fogmesh dashboard users add|remove): name:role:scrypt hash\n")
                for u in self.users.values():
                    f.write(f"{u.name}:{u.role}:{u.password_hash}\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise UsersFileError(f"cannot write the users file {self.path}: {exc.strerror or exc}") from exc


_DUMMY_HASH = hash_password("not a password", salt=b"fogmesh-dummy-00")
