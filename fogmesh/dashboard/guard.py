"""Which requests the dashboard serves at all: the names it answers to (the
``Host`` header), the origin of requests that change something, and the
headers every answer carries. Pure.

Why a Host allow-list: a page on any site the operator visits can point its
own domain name at this dashboard's address (DNS rebinding). The browser
then sends that page's requests here with ``Host: evil.example`` and, since
the page and the request share that origin, an ``Origin`` that matches it:
comparing Origin with Host is not enough. So the Host must be one of the
names and addresses this dashboard is served under: those of ``--host``
(for 0.0.0.0, every address of this machine and its host name), loopback,
and each ``--server-name``. A rebinding page cannot send one of those.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ANY = ("0.0.0.0", "::", "")

SECURITY_HEADERS = {
    # Only the dashboard's own files; no framing (clickjacking a button), no
    # plugins, no <base> or form posts elsewhere.
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'self'; object-src 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # "no-referrer" would make Chromium send "Origin: null" with the page's own
    # form posts (the login), which the origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_names(bind_host: str, server_names: Iterable[str] = (), *,
                 addresses: Iterable[str] = (), hostname: str | None = None) -> frozenset[str]:
    """The names a Host header may carry: loopback, ``bind_host`` (for a
    wildcard bind, ``addresses`` of this machine and ``hostname``), and
    ``server_names``. Lower case, no trailing dot."""
    names = set(LOOPBACK_NAMES)
    if bind_host in ANY:
        names.update(addresses)
        if hostname:
            names.update({hostname, hostname.split(".")[0], hostname.split(".")[0] + ".local"})
    else:
        names.add(bind_host)
    names.update(server_names)
    return frozenset(_norm(n) for n in names if n)


def host_of(header: str | None) -> str | None:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``),
    lower case; None if it is missing or malformed."""
    if not header:
        return None
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[1:end], header[end + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return _norm(name)
    name, _, port = header.partition(":")
    if port and not port.isdigit():
        return None
    return _norm(name) or None


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    name = host_of(header)
    return name is not None and name in names


def same_origin(origin: str | None, host_header: str | None, *, tls: bool) -> bool:
    """A request that changes something: no ``Origin`` (not a browser's
    cross-site request), or this very scheme and host."""
    if origin is None:
        return True
    scheme = "https" if tls else "http"
    return host_header is not None and origin.lower() == f"{scheme}://{host_header.strip().lower()}"


def _norm(name: str) -> str:
    return name.strip().lower().rstrip(".")
