"""mosquitto's password and ACL files, as text (pure): read, checked,
changed one login at a time. The registrar (``fogmesh fleet serve``) writes
them for mosquitto and for the embedded broker alike; the embedded broker
(``fogmesh broker --auth DIR``) enforces them as mosquitto does.

Password file: a line ``login:$7$ITERATIONS$SALT$HASH`` per login, the hash
PBKDF2-HMAC-SHA512 as ``mosquitto_passwd`` 2.0 writes it (``$6$SALT$HASH``,
SHA-512 of password and salt, is read too).

ACL file: ``user LOGIN`` opens a login's block, ``topic [read|write|readwrite|deny] FILTER``
lines follow; lines before any ``user`` are for anonymous clients;
``pattern`` lines are for every client, with ``%u`` (its login) and ``%c``
(its client id) put in. A client may read (or write) a topic when one of its
rules of that access matches it and no ``deny`` rule does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field

from fogmesh.topics import topic_matches

ITERATIONS = 101            # mosquitto_passwd 2.0's own
ACCESS = ("read", "write", "readwrite", "deny")

Rule = tuple[str, str]      # (access, topic filter)


# -- passwords ---------------------------------------------------------------------------------
def hash_password(password: str, salt: bytes, *, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` form mosquitto 2.0 reads (``salt``: 12 random bytes from the caller)."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(hashed: str, password: str) -> bool:
    """Whether ``password`` is the one ``hashed`` was made from (``$7$`` or ``$6$``)."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
        elif len(parts) == 4 and parts[1] == "6":
            salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            got = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, want)


def parse_passwd(text: str) -> dict[str, str]:
    """login -> hash, in the file's order (blank lines and ``#`` comments skipped)."""
    logins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            login, _, hashed = line.partition(":")
            logins[login] = hashed
    return logins


def format_passwd(logins: dict[str, str]) -> str:
    return "".join(f"{login}:{hashed}\n" for login, hashed in logins.items())


def with_login(text: str, login: str, hashed: str) -> str:
    """The password file with ``login`` set to ``hashed`` (added at the end, or replaced in place)."""
    _check_login(login)
    logins = parse_passwd(text)
    logins[login] = hashed
    return format_passwd(logins)


def without_login(text: str, login: str) -> str:
    logins = parse_passwd(text)
    logins.pop(login, None)
    return format_passwd(logins)


def _check_login(login: str) -> None:
    if not login or any(c in login for c in ": \t\n#") or login in ("user", "topic", "pattern"):
        raise ValueError(f"login {login!r}: no ':', spaces or '#'")


# -- the ACL -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acl:
    """A parsed ACL file."""

    blocks: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    anonymous: tuple[Rule, ...] = ()
    patterns: tuple[Rule, ...] = ()

    def rules_for(self, login: str | None, client_id: str) -> list[Rule]:
        own = self.blocks.get(login, ()) if login is not None else self.anonymous
        filled = [(access, topic.replace("%u", login or "").replace("%c", client_id))
                  for access, topic in self.patterns
                  if login is not None or "%u" not in topic]
        return [*own, *filled]

    def allows(self, login: str | None, client_id: str, topic: str, access: str) -> bool:
        """May this client ``read`` or ``write`` ``topic``?"""
        rules = self.rules_for(login, client_id)
        if any(a == "deny" and topic_matches(f, topic) for a, f in rules):
            return False
        return any(a in (access, "readwrite") and topic_matches(f, topic) for a, f in rules)

    def allows_filter(self, login: str | None, client_id: str, topic_filter: str) -> bool:
        """May this client read every topic ``topic_filter`` matches (a shared
        subscription, whose messages cannot be checked one by one without
        taking them from the group)?"""
        rules = self.rules_for(login, client_id)
        if any(a == "deny" and _overlap(f, topic_filter) for a, f in rules):
            return False
        return any(a in ("read", "readwrite") and within(topic_filter, f) for a, f in rules)


def parse_acl(text: str) -> Acl:
    """The ACL file's rules; a line that is not one is ignored (as mosquitto warns and goes on)."""
    blocks: dict[str, list[Rule]] = {}
    anonymous: list[Rule] = []
    patterns: list[Rule] = []
    current: list[Rule] = anonymous
    for raw in text.splitlines():
        words = raw.strip().split(None, 2)
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user" and len(words) >= 2:
            current = blocks.setdefault(raw.strip().split(None, 1)[1], [])
        elif words[0] in ("topic", "pattern") and len(words) >= 2:
            access, topic = (words[1], words[2]) if len(words) == 3 and words[1] in ACCESS else \
                ("readwrite", raw.strip().split(None, 1)[1])
            (patterns if words[0] == "pattern" else current).append((access, topic.strip()))
    return Acl({u: tuple(r) for u, r in blocks.items()}, tuple(anonymous), tuple(patterns))


def block_text(login: str, rules: list[Rule]) -> str:
    """One login's block, as ``python -m fogmesh.broker.secure`` writes it."""
    _check_login(login)
    return "\n".join([f"user {login}"] + [f"topic {mode} {topic}" for mode, topic in rules]) + "\n"


def _sections(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The lines before the first ``user`` line, and each login's lines (its ``user`` line first)."""
    head: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if words and words[0] == "user" and len(words) == 2:
            sections.append((words[1], [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            head.append(line)
    return head, sections


def _join(head: list[str], sections: list[tuple[str, list[str]]]) -> str:
    lines = list(head)
    for _, body in sections:
        while body and not body[-1].strip():
            body = body[:-1]
        if lines and lines[-1].strip():
            lines.append("")
        lines += body
    return "\n".join(lines).rstrip("\n") + "\n"


def acl_with_block(text: str, login: str, rules: list[Rule]) -> str:
    """The ACL file with ``login``'s block replaced by (or, new, ended with) these rules."""
    head, sections = _sections(text)
    block = (login, block_text(login, rules).splitlines())
    sections = [block if name == login else (name, body) for name, body in sections]
    if all(name != login for name, _ in sections):
        sections.append(block)
    return _join(head, sections)


def acl_without_login(text: str, login: str) -> str:
    """The ACL file without ``login``'s block (every other line as it was)."""
    head, sections = _sections(text)
    return _join(head, [(name, body) for name, body in sections if name != login])


# -- filters -----------------------------------------------------------------------------------
def within(inner: str, outer: str) -> bool:
    """Every topic that ``inner`` matches, ``outer`` matches too."""
    a, b = inner.split("/"), outer.split("/")
    for i, level in enumerate(b):
        if level == "#":
            return not (i == 0 and a[0].startswith("$"))
        if i >= len(a):
            return False
        if a[i] == "#":
            return False
        if level != "+" and level != a[i]:
            return False
    return len(a) == len(b)


def _overlap(x: str, y: str) -> bool:
    """Some topic matches both filters."""
    a, b = x.split("/"), y.split("/")
    for i in range(max(len(a), len(b))):
        p = a[i] if i < len(a) else None
        q = b[i] if i < len(b) else None
        if p == "#" or q == "#":
            return True
        if p is None or q is None:
            return False
        if p != q and "+" not in (p, q):
            return False
    return True
