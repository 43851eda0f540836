"""What the registrar decides (pure; :mod:`.serve` carries it out): whether a
join request gets an identity, which id, which login and ACL rules; whether
a revoke request holds. The clock, the password and its salt come in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fogmesh.broker.logins import hash_password
from fogmesh.broker.secure import FLEET_JOIN, REGISTRAR, login_of, role_rules
from fogmesh.deploy.manifest import Signed
from fogmesh.deploy.signing import TrustStore
from fogmesh.errors import DeployRefused, JoinRefused
from fogmesh.identities import IdentityRecord, JoinRequest, NewIdentity
from fogmesh.join_token import JoinToken, verify_token
from fogmesh.topics import is_segment

from .spent import Spent, SpentTokens

REQUEST_WINDOW_S = 600.0        # a signed request older (or newer) than this is refused: a replay
RESERVED = (REGISTRAR, FLEET_JOIN)
_ID_CHARS = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class Site:
    """What the registrar hands every box it enrolls, and what it takes."""

    root: str
    site: str | None = None                 # tokens for another site are refused (None: any site)
    ca_pem: str | None = None
    trust_lines: tuple[str, ...] = ()       # the bundle trust keys boxes take deployments signed by


@dataclass(frozen=True)
class Refused:
    code: str
    message: str


@dataclass(frozen=True)
class Again:
    """The same box asks again with its token: its answer as it was."""

    entry: Spent


@dataclass(frozen=True)
class Mint:
    """A new identity: its login (hashed password, ACL rules), what is sealed
    to the box, and its record."""

    token: JoinToken
    identity: NewIdentity
    hashed: str
    rules: list[tuple[str, str]]
    record: IdentityRecord


def clean_id(text: str | None) -> str | None:
    """A host name as a box id (lower case, letters, digits, ``._-``), or None."""
    if not text:
        return None
    cleaned = _ID_CHARS.sub("-", text.strip().lower().split(".")[0]).strip("-")[:63]
    return cleaned if cleaned and is_segment(cleaned) else None


def choose_id(token: JoinToken, wanted: str | None, taken: set[str]) -> str | Refused:
    """The box's id: the token's, else the one it asks for (its host name),
    else ``ROLE-TOKEN``; a taken wanted id gets ``-2``, ``-3``... A bridge is
    ``bridge-SITE``."""
    if token.role == "bridge":
        box = login_of("bridge", token.site)
        if box in taken:
            return Refused("id_taken", f"{box} already has a login: one bridge per site (revoke it first)")
        return box
    if token.box_id is not None:
        if token.box_id in taken or token.box_id in RESERVED:
            return Refused("id_taken", f"the token names {token.box_id}, which already has a login (or was "
                           "revoked): enroll with another --id")
        return token.box_id
    base = clean_id(wanted) or f"{token.role}-{token.token_id[:6].lower()}"
    if base.startswith("bridge-") or base in RESERVED:
        base = f"{token.role}-{base}"
    box, n = base, 1
    while box in taken:
        n += 1
        box = f"{base}-{n}"
    return box


def decide_join(request: JoinRequest, *, trust: TrustStore, site: Site, spent: SpentTokens, taken: set[str],
                now: float, password: str, salt: bytes) -> Refused | Again | Mint:
    try:
        token = verify_token(request.token, trust, now=now)
    except JoinRefused as exc:
        return Refused(exc.code, str(exc))
    if site.site is not None and token.site != site.site:
        return Refused("wrong_site", f"the token is for site {token.site}; this registrar enrolls boxes of "
                       f"{site.site}")
    if token.root != site.root:
        return Refused("wrong_site", f"the token is for topic root {token.root}; this registrar serves {site.root}")
    verdict = spent.check(token.token_id, request.box_key)
    if verdict.kind == "again" and verdict.entry is not None:
        return Again(verdict.entry)
    if verdict.kind == "used" and verdict.entry is not None:
        return Refused("used", f"join token {token.token_id} was already used (by {verdict.entry.box_id}): a token "
                       "works once; ask the operator for a new one (fogmesh fleet enroll)")
    box = choose_id(token, request.wanted_id, taken)
    if isinstance(box, Refused):
        return box
    login = box
    identity = NewIdentity(box_id=box, role=token.role, site=token.site, login=login, password=password,
                           broker=token.broker, labels=token.labels, root=site.root, ca_pem=site.ca_pem,
                           trust_keys=site.trust_lines)
    record = IdentityRecord(box_id=box, role=token.role, site=token.site, labels=token.labels, state="active",
                            joined=round(now, 3), source="join", token=token.token_id)
    rules = role_rules(token.role, token.site if token.role == "bridge" else box, site.root)
    return Mint(token=token, identity=identity, hashed=hash_password(password, salt), rules=rules, record=record)


def revoke_document(box: str, *, ts: float, request_id: str) -> dict[str, object]:
    """The document an operator signs to revoke ``box`` (``fogmesh fleet revoke``)."""
    return {"type": "fleet-request", "op": "revoke", "id": box, "ts": round(ts, 3), "rid": request_id}


def decide_revoke(signed: Signed, *, trust: TrustStore, now: float, records: dict[str, IdentityRecord],
                  logins: set[str]) -> str | Refused:
    """The box to revoke, or why not: the request must be signed by a trusted
    key, say ``op: revoke``, and be at most :data:`REQUEST_WINDOW_S` old."""
    try:
        signed.verified(trust, what="fleet request")
    except DeployRefused as exc:
        return Refused(exc.code, str(exc))
    doc = signed.document
    ts, box = doc.get("ts"), doc.get("id")
    if doc.get("type") != "fleet-request" or doc.get("op") != "revoke" or not is_segment(box):
        return Refused("bad_request", "a fleet request is {type: fleet-request, op: revoke, id: BOX, ts}")
    if not isinstance(ts, (int, float)) or abs(now - ts) > REQUEST_WINDOW_S:
        return Refused("stale_request", f"the request was signed at {ts}, more than {REQUEST_WINDOW_S:g} s from "
                       "this registrar's clock: a replay, or a clock off (timedatectl)")
    assert isinstance(box, str)
    if box in RESERVED:
        return Refused("bad_request", f"{box} is the fleet's own login")
    if box not in records and box not in logins:
        return Refused("unknown_box", f"no box {box} here (fogmesh fleet list)")
    return box


def guess_role(rules: tuple[tuple[str, str], ...], login: str) -> str:
    """A login's role from its ACL block as ``broker.secure`` writes them (for ``fleet list``)."""
    topics = {t for _, t in rules}
    if login.startswith("bridge-"):
        return "bridge"
    if any(t.endswith("/deploy/desired/#") for t in topics):
        return "operator"
    if any(t.endswith(f"/presence/{login}") for t in topics):
        return "agent"
    if any(t.endswith(f"/tasks/{login}") for t in topics):
        return "device"
    return "?"
