"""Where a broker is and how to log in to it: the ``--broker`` URL, parsed.

Pure (no sockets, no paho), so the CLI can check a URL and say what is wrong
with it before anything connects; :mod:`fogmesh.mqtt` connects to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from fogmesh.errors import ConnectError

DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883, "ws": 80, "wss": 443}
TLS_SCHEMES = ("mqtts", "ssl", "wss")
WEBSOCKET_SCHEMES = ("ws", "wss")


@dataclass(frozen=True)
class BrokerUrl:
    """``mqtt://[user@]host[:port]`` or ``mqtts://user@host:8883?ca=PATH&password_file=PATH``;
    over WebSockets ``ws://host:9001[/path]`` or ``wss://...`` (path default ``/mqtt``).

    The password never comes from the command line: from ``password_file``,
    else the file named by ``$FOGMESH_PASSWORD_FILE``, else ``$FOGMESH_PASSWORD``
    (see :func:`resolve_password`). ``ca``: the CA certificate to trust (default:
    the system's).
    """

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    password_file: str | None = None
    websocket: bool = False
    path: str = "/mqtt"
    #: Other nodes of a cluster, tried in turn when the one in use goes (a failover
    #: list: ``mqtt://node1:1883,node2:1883,node3:1883``; same scheme, login, options).
    alternates: tuple[tuple[str, int], ...] = ()

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port), *self.alternates)

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        if "," in url:
            first, *rest = (u.strip() for u in url.split(","))
            primary = cls.parse(first)
            others = []
            for u in rest:
                if "://" not in u:            # host[:port]: the first node's scheme and login
                    u = f"{primary.scheme}://{u}"
                    node = cls.parse(u)
                else:
                    node = cls.parse(u)
                    if (node.scheme, node.username) != (primary.scheme, primary.username):
                        raise ValueError(f"broker URL {url!r}: the nodes of a failover list share scheme and "
                                         "login")
                others.append((node.host, node.port))
            return replace(primary, alternates=tuple(others))
        if "://" not in url:
            url = "mqtt://" + url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt://, mqtts://, ws:// or wss://")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ValueError(f"broker URL {url!r}: bad port") from exc
        query = dict(parse_qsl(parts.query))
        unknown = set(query) - {"ca", "password_file"}
        if unknown:
            raise ValueError(f"broker URL: unknown option(s) {', '.join(sorted(unknown))}; "
                             "known: ca=PATH, password_file=PATH")
        websocket = scheme in WEBSOCKET_SCHEMES
        return cls(host=parts.hostname or "127.0.0.1", port=port, tls=scheme in TLS_SCHEMES,
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   ca_file=query.get("ca"), password_file=query.get("password_file"),
                   websocket=websocket, path=(parts.path or "/mqtt") if websocket else "/mqtt")

    @property
    def scheme(self) -> str:
        if self.websocket:
            return "wss" if self.tls else "ws"
        return "mqtts" if self.tls else "mqtt"

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        path = self.path if self.websocket and self.path != "/mqtt" else ""
        more = "".join(f",{h}:{p}" for h, p in self.alternates)
        return f"{self.scheme}://{user}{self.host}:{self.port}{path}{more}"


def resolve_password(url: BrokerUrl, env: Mapping[str, str]) -> str | None:
    """The password for ``url``'s user: ``password_file``, ``$FOGMESH_PASSWORD_FILE``,
    ``$FOGMESH_PASSWORD``, or one given in the URL by a program (not the CLI)."""
    if url.username is None:
        return None
    path = url.password_file or env.get("FOGMESH_PASSWORD_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConnectError(f"cannot read the password file {path}: {exc}") from exc
    return env.get("FOGMESH_PASSWORD", url.password)
