"""The registrar's spent-token store: which tokens were used, by which box
key, and the answer that box got (pure decisions; :class:`~fogmesh.enrollment.files.SpentFile` keeps
them on disk).

A token works once: a second join with it is refused, saying when and for
which box it was used, unless it comes from the same box key (the same box
asking again after its answer was lost): that box gets the same sealed answer
again, and nothing new is minted. An entry is kept until its token expires
(then the token is refused as expired anyway), so the store stays as small
as the tokens still valid.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from fogmesh import codec


@dataclass(frozen=True)
class Spent:
    token_id: str
    expires: int
    box_key: str               # SHA-256 of the box's X25519 public key, hex
    box_id: str
    used: float                # when
    answer: str                # the sealed answer, base64 (only that box can open it)
    login_hash: str            # the login's password hash, to put the login back if the files lost it
    role: str = "agent"


def key_hash(box_key: bytes) -> str:
    return hashlib.sha256(box_key).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """``new``: not used yet; ``again``: used by this very box key (``entry``
    holds its answer); ``used``: used by another box (``entry`` says which)."""

    kind: str
    entry: Spent | None = None


class SpentTokens:
    def __init__(self, entries: dict[str, Spent] | None = None) -> None:
        self.entries: dict[str, Spent] = dict(entries or {})

    def check(self, token_id: str, box_key: bytes) -> Verdict:
        entry = self.entries.get(token_id)
        if entry is None:
            return Verdict("new")
        return Verdict("again" if entry.box_key == key_hash(box_key) else "used", entry)

    def spend(self, entry: Spent) -> None:
        if entry.token_id in self.entries:
            raise ValueError(f"token {entry.token_id} is already spent")
        self.entries[entry.token_id] = entry

    def prune(self, now: float, *, grace_s: float = 3600.0) -> int:
        """Forget tokens expired for ``grace_s`` (refused as expired anyway); returns how many."""
        old = [t for t, e in self.entries.items() if e.expires + grace_s < now]
        for t in old:
            del self.entries[t]
        return len(old)

    def encode(self) -> bytes:
        return codec.encode({"spent": [asdict(e) for e in self.entries.values()]})

    @classmethod
    def decode(cls, data: bytes) -> SpentTokens:
        doc = codec.decode(data)
        return cls({e["token_id"]: Spent(**e) for e in doc.get("spent", [])})
