"""Whom the dashboard may be exposed to, as started: the address it serves,
its logins, TLS, and the names it is reached under. Pure.

- Beyond this machine (any ``--host`` but loopback), everyone must log in:
  without a users file it does not start.
- Beyond this machine, logins go over TLS: passwords and session cookies in
  clear on a LAN are anyone's who listens there (shared Wi-Fi, a mirrored
  switch port). Plain HTTP logins on a LAN only with
  ``--insecure-http-logins``, whose name says the risk (issue #37: it used to
  start with a warning on stderr nobody reads).
- Without logins, buttons serve this machine's own users only. A dashboard
  behind a reverse proxy serves whoever reaches the proxy, so its buttons
  need logins: none with a ``--server-name`` (the name of a proxy, or some
  other name than this machine's) and no users file, and none for a request
  a proxy relayed (it carries ``Forwarded``, ``X-Forwarded-For`` or
  ``X-Real-IP``). It used to take such presses as ``local (operator)``.
- Behind a proxy every request comes from the proxy's address, and failed
  logins are counted by address (:mod:`.attempts`): one client's failures
  would slow everyone behind it. A proxy named with ``--trusted-proxy`` is
  believed about the client it relays (:func:`client_address`); any other
  peer's forwarding headers are not (anyone may send them).
"""

from __future__ import annotations

import ipaddress
from typing import Collection, Mapping

from fogmesh.dashboard.guard import ANY, is_loopback

INSECURE_FLAG = "--insecure-http-logins"
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


def refusal(*, host: str, logins: bool, tls: bool, insecure_http_logins: bool = False) -> str | None:
    """Why the dashboard will not start as asked, or None."""
    if is_loopback(host):
        return None
    where = "every address of this machine" if host in ANY else host
    if not logins:
        return (f"--host {host} serves the page, and its buttons, to {where}, so it needs logins, and there is "
                "no users file. Add one: fogmesh dashboard users add NAME --role operator (viewers: --role "
                "viewer), then start again; with --tls-cert/--tls-key passwords do not cross the LAN in clear. "
                "Or serve this machine only (--host 127.0.0.1).")
    if not tls and not insecure_http_logins:
        return (f"--host {host} would take passwords and session cookies from {where} over plain HTTP, in "
                "clear for anyone on that network to read. Give a certificate: --tls-cert/--tls-key "
                "(python -m fogmesh.broker.secure --out DIR --dashboard HOST issues one), or put a TLS proxy in "
                f"front and serve 127.0.0.1 with --server-name; or, knowing the risk, {INSECURE_FLAG}.")
    return None


def insecure_warning(*, host: str, logins: bool, tls: bool) -> str | None:
    """The warning a dashboard started with :data:`INSECURE_FLAG` repeats in its log."""
    if is_loopback(host) or not logins or tls:
        return None
    return (f"{INSECURE_FLAG}: passwords and session cookies cross the network in clear; anyone on it may "
            "read them and press the buttons as that user")


def relayed(headers: Mapping[str, str] | Collection[str]) -> bool:
    """Did a proxy relay this request (any of its forwarding headers)?"""
    return any(str(h).lower() in FORWARDING_HEADERS for h in headers)


def client_address(peer: str, headers: Mapping[str, str], trusted_proxies: Collection[str]) -> str:
    """Where a request comes from: the peer's address, or, from a trusted
    proxy, the client it names: the last ``X-Forwarded-For`` entry (the one
    that proxy appended), else ``X-Real-IP``; a malformed one is not
    believed."""
    if peer not in trusted_proxies:
        return peer
    forwarded = headers.get("X-Forwarded-For")
    named = forwarded.split(",")[-1] if forwarded else headers.get("X-Real-IP")
    if not named:
        return peer
    try:
        return str(ipaddress.ip_address(named.strip()))
    except ValueError:
        return peer


def buttons_refused(*, logins: bool, server_names: Collection[str], relayed_request: bool = False) -> str | None:
    """Why a press is refused by how the dashboard is exposed, or None (the
    user's role is checked after this)."""
    if logins:
        return None
    if server_names:
        return ("served under --server-name (behind a proxy?) without logins: buttons need logins there; "
                "fogmesh dashboard users add NAME --role operator, then start again")
    if relayed_request:
        return ("a request relayed by a proxy, and no logins: buttons need logins behind a proxy; fogmesh "
                "dashboard users add NAME --role operator")
    return None
