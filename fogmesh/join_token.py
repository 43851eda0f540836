"""Join tokens: what ``fogmesh fleet enroll`` prints and ``fogmesh join``
takes (topics.md, "Fleet"). Pure: text in, a checked :class:`JoinToken` or a
:class:`~fogmesh.errors.JoinRefused` out; the clock is passed in.

A token is one line, ``fmj1.<claims>.<signature>``: the claims are compact
JSON in unpadded base64url, the signature an Ed25519 signature by the
operator's key (``fogmesh bundle keygen``'s) over ``fogmesh join token\\n``
and the claims' text. The claims, short keys to keep the QR code small:

====  ===========================================================================
``v`` format, 1
``t`` the token's id (random, 16 characters): what the registrar marks spent
``k`` the id of the key that signed it
``r`` the role it grants: ``agent``, ``device`` or ``bridge``
``s`` the site
``l`` labels (a list, may be empty)
``e`` when it expires (Unix seconds)
``b`` the broker to join through, without a login (``mqtts://gw.lan:8883``)
``c`` the site CA's pin: unpadded base64url of the SHA-256 of its DER form (TLS only)
``p`` the join login's password (not a secret of the box: it only lets a box ask)
``o`` the topic root, when not ``fog/v1``
``i`` the box's id, when the operator chose it
====  ===========================================================================

Anyone holding a token can join once with it until it expires, as with
ioFog's provisioning keys: it is a bearer secret, printed for one box.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from fogmesh.deploy.signing import SigningKey, TrustStore
from fogmesh.errors import DeployRefused, JoinRefused
from fogmesh.topics import DEFAULT_ROOT, is_segment

PREFIX = "fmj1"
ROLES = ("agent", "device", "bridge")
MAX_TOKEN = 2048               # characters; a token is ~450
SIGNED_PREFIX = b"fogmesh join token\n"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class JoinToken:
    token_id: str
    role: str
    site: str
    expires: int
    broker: str
    join_password: str
    labels: tuple[str, ...] = ()
    ca_pin: str | None = None
    root: str = DEFAULT_ROOT
    box_id: str | None = None
    key_id: str = ""
    raw: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: one of {', '.join(ROLES)}")
        for what, name in (("site", self.site), *(("label", label) for label in self.labels)):
            if not is_segment(name) or "," in name:
                raise ValueError(f"{what} {name!r}: 1-128 characters without '/', '+', '#', ',' "
                                 "(not starting with '$')")
        if self.box_id is not None and not is_segment(self.box_id):
            raise ValueError(f"box id {self.box_id!r}: 1-128 characters without '/', '+', '#'")

    def claims(self) -> dict[str, Any]:
        c: dict[str, Any] = {"v": 1, "t": self.token_id, "k": self.key_id, "r": self.role, "s": self.site,
                             "l": list(self.labels), "e": int(self.expires), "b": self.broker, "p": self.join_password}
        if self.ca_pin:
            c["c"] = self.ca_pin
        if self.root != DEFAULT_ROOT:
            c["o"] = self.root
        if self.box_id:
            c["i"] = self.box_id
        return c


def sign_token(token: JoinToken, key: SigningKey) -> str:
    """The token's text, signed by ``key`` (its id goes into the claims)."""
    claims = {**token.claims(), "k": key.public.key_id}
    body = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    sig = base64.b64decode(key.sign(SIGNED_PREFIX + body.encode())["sig"])
    return f"{PREFIX}.{body}.{b64url(sig)}"


def _bad(why: str) -> JoinRefused:
    return JoinRefused("bad_token", f"not a fogmesh join token ({why}): copy the whole line "
                       "`fogmesh fleet enroll` printed, fmj1....")


def read_token(text: str) -> tuple[JoinToken, str, bytes]:
    """The claims of a token, unverified (a joining box reads where to go
    from them), with the signed text and the signature."""
    text = "".join(text.split())
    if len(text) > MAX_TOKEN:
        raise _bad(f"{len(text)} characters; a token has at most {MAX_TOKEN}")
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise _bad("it has the form fmj1.CLAIMS.SIGNATURE")
    try:
        claims = json.loads(unb64url(parts[1]))
        sig = unb64url(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise _bad(f"not base64url JSON: {exc}") from None
    if not isinstance(claims, dict) or claims.get("v") != 1:
        raise _bad("unknown version")
    try:
        labels = claims.get("l", [])
        expires = claims["e"]
        if not isinstance(labels, list) or not isinstance(expires, int) or isinstance(expires, bool):
            raise TypeError("bad labels or expiry")
        strings = {k: claims.get(k) for k in ("t", "r", "s", "b", "p", "k")}
        if not all(isinstance(v, str) and v for v in strings.values()):
            raise TypeError("a required claim is missing")
        token = JoinToken(token_id=str(claims["t"]), role=str(claims["r"]), site=str(claims["s"]),
                          expires=expires, broker=str(claims["b"]), join_password=str(claims["p"]),
                          labels=tuple(str(label) for label in labels),
                          ca_pin=str(claims["c"]) if isinstance(claims.get("c"), str) else None,
                          root=str(claims.get("o") or DEFAULT_ROOT),
                          box_id=str(claims["i"]) if isinstance(claims.get("i"), str) else None,
                          key_id=str(claims["k"]), raw=text)
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(str(exc)) from None
    return token, parts[1], sig


def verify_token(text: str, trust: TrustStore, *, now: float) -> JoinToken:
    """The token, if a key in ``trust`` signed it and it has not expired at
    ``now``; else :class:`JoinRefused` (``bad_token``, ``unknown_key``,
    ``bad_signature``, ``expired``). Whether it was used already is the
    spent-token store's to say."""
    token, body, sig = read_token(text)
    entry = {"key": token.key_id, "sig": base64.b64encode(sig).decode()}
    try:
        trust.verify(SIGNED_PREFIX + body.encode(), [entry], what=f"join token {token.token_id}")
    except DeployRefused as exc:
        raise JoinRefused(exc.code, str(exc)) from None
    if now >= token.expires:
        minutes = (now - token.expires) / 60
        raise JoinRefused("expired", f"join token {token.token_id} expired {minutes:.0f} min ago: ask the operator "
                          "for a new one (fogmesh fleet enroll)")
    return token
