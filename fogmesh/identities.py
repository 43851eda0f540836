"""The fleet's documents (topics.md, "Fleet"): a join request, the
registrar's answer, the identity it seals to the box, the retained identity
record of every box and the registrar's announcement. Pure; each decoder is
strict (:mod:`fogmesh.fields`) and refuses what does not fit.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from fogmesh import codec
from fogmesh.errors import InvalidMessage, JoinRefused
from fogmesh.fields import MAX_NAME, Fields, decode_announcement
from fogmesh.join_token import MAX_TOKEN, ROLES
from fogmesh.topics import DEFAULT_ROOT

STATES = ("active", "revoked")
MAX_REQUEST = 8 * 1024
MAX_CA = 16 * 1024


def _b64(text: object, *, size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (ValueError, binascii.Error):
        raise JoinRefused("bad_request", "a field that must be base64 is not") from None
    if size is not None and len(raw) != size:
        raise JoinRefused("bad_request", f"a key of {len(raw)} bytes; it has {size}")
    return raw


@dataclass(frozen=True)
class JoinRequest:
    """``{"token", "box_key", "id"}`` on ``fleet/join/{nonce}``: ``box_key``
    is the box's one-time X25519 public key (base64), ``id`` the id it would
    like (its host name) when the token names none."""

    token: str
    box_key: bytes
    wanted_id: str | None = None

    def encode(self) -> bytes:
        return codec.encode({"token": self.token, "box_key": base64.b64encode(self.box_key).decode(),
                             "id": self.wanted_id})

    @classmethod
    def decode(cls, payload: bytes) -> JoinRequest:
        if len(payload) > MAX_REQUEST:
            raise JoinRefused("bad_request", f"a join request of {len(payload)} bytes; at most {MAX_REQUEST}")
        try:
            f = Fields(codec.decode(payload), "join request")
            token = f.text("token", MAX_TOKEN + 1)
            wanted = f.text("id", MAX_NAME + 1)
        except InvalidMessage as exc:
            raise JoinRefused("bad_request", str(exc)) from None
        if not token:
            raise JoinRefused("bad_request", "a join request without a token")
        return cls(token=token, box_key=_b64(f.get("box_key"), size=32), wanted_id=wanted or None)


@dataclass(frozen=True)
class NewIdentity:
    """What the registrar seals to a joining box: who it is and how it logs in."""

    box_id: str
    role: str
    site: str
    login: str
    password: str
    broker: str
    labels: tuple[str, ...] = ()
    root: str = DEFAULT_ROOT
    ca_pem: str | None = None
    trust_keys: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return codec.encode({"id": self.box_id, "role": self.role, "site": self.site, "labels": list(self.labels),
                             "login": self.login, "password": self.password, "broker": self.broker,
                             "root": self.root, "ca": self.ca_pem, "trust_keys": list(self.trust_keys)})

    @classmethod
    def decode(cls, payload: bytes) -> NewIdentity:
        f = Fields(codec.decode(payload), "identity")
        ca = f.text("ca", MAX_CA)
        keys = f.get("trust_keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) and len(k) < 200 for k in keys):
            raise f.bad("trust_keys", "a list of key lines")
        return cls(box_id=f.box_id("id"), role=f.choice("role", ROLES), site=f.box_id("site"),
                   login=f.box_id("login"), password=f.text("password", 256) or "",
                   broker=f.text("broker", 1024) or "", labels=f.names("labels"),
                   root=f.text("root", 256) or DEFAULT_ROOT, ca_pem=ca, trust_keys=tuple(keys))


def answer_sealed(sealed: bytes) -> bytes:
    """The registrar's answer to a join that worked: the identity, sealed."""
    return codec.encode({"sealed": base64.b64encode(sealed).decode()})


def answer_refused(code: str, message: str) -> bytes:
    """The registrar's answer to a join it refuses: why (nothing secret)."""
    return codec.encode({"error": {"code": code, "message": message}})


def read_answer(payload: bytes) -> bytes:
    """The sealed identity in an answer, or :class:`JoinRefused` with the registrar's reason."""
    try:
        f = Fields(codec.decode(payload), "join answer")
    except InvalidMessage as exc:
        raise JoinRefused("bad_answer", f"the registrar's answer is not JSON: {exc}") from None
    error = f.get("error")
    if isinstance(error, dict):
        e = Fields(error, "refusal")
        raise JoinRefused(e.text("code", 64) or "refused", e.text("message", 1000) or "refused")
    return _b64(f.get("sealed"))


@dataclass(frozen=True)
class IdentityRecord:
    """A box's record, retained on ``fleet/identities/{id}``: ``state``
    ``active`` or ``revoked``; ``joined`` and ``revoked`` in Unix seconds;
    ``source`` ``join`` (the registrar minted it) or ``static`` (a login of
    ``python -m fogmesh.broker.secure``)."""

    box_id: str
    role: str
    site: str = ""
    labels: tuple[str, ...] = ()
    state: str = "active"
    joined: float | None = None
    revoked: float | None = None
    source: str = "join"
    token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.box_id, "role": self.role, "site": self.site, "labels": list(self.labels),
                "state": self.state, "joined": self.joined, "revoked": self.revoked, "source": self.source,
                "token": self.token}

    def encode(self) -> bytes:
        return codec.encode(self.to_dict())

    @classmethod
    def decode(cls, payload: bytes, *, box: str) -> IdentityRecord:
        """``box``: from the topic (only the registrar writes there); a document naming another is refused."""
        f = Fields(decode_announcement(payload, "identity record"), "identity record")
        if f.get("id") not in (None, box):
            raise InvalidMessage("bad_field", f"identity record on {box!r} names another box")
        return cls(box_id=box, role=f.text("role", 32) or "?", site=f.text("site", MAX_NAME) or "",
                   labels=f.names("labels"), state=f.choice("state", STATES), joined=f.number("joined", None),
                   revoked=f.number("revoked", None), source=f.text("source", 16) or "join",
                   token=f.text("token", 64))


@dataclass(frozen=True)
class RegistrarInfo:
    """The registrar's announcement, retained on ``fleet/registrar``."""

    site: str
    state: str
    join_login: str
    join_password: str
    trusted: tuple[str, ...]
    ts: float

    def encode(self) -> bytes:
        return codec.encode({"site": self.site, "state": self.state, "join_login": self.join_login,
                             "join_password": self.join_password, "trusted": list(self.trusted), "ts": self.ts})

    @classmethod
    def decode(cls, payload: bytes) -> RegistrarInfo:
        f = Fields(decode_announcement(payload, "registrar announcement"), "registrar announcement")
        return cls(site=f.text("site", MAX_NAME) or "", state=f.choice("state", ("online", "offline")),
                   join_login=f.text("join_login", MAX_NAME) or "", join_password=f.text("join_password", 256) or "",
                   trusted=f.names("trusted"), ts=f.number("ts", 0.0))
