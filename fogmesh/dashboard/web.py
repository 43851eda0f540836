"""The dashboard's HTTP side: routes, logins, and the checks every request
passes before anything else (the served names, the session, the origin).

Order, for every request: the ``Host`` header must be a name this dashboard
serves (:mod:`fogmesh.dashboard.guard`: DNS rebinding), then the users file
is looked at (read again if it changed), then, where logins are on, a live
session cookie (else the login page, or 401 for the API and the event
stream), then for a POST the same origin and a JSON body, then for a button
how the dashboard is exposed (:mod:`.exposure`) and the operator role. A
login is let through to its password hash only if :mod:`.attempts` admits
it; an event stream only within :mod:`.streams`' quota. Every answer
carries the security headers.
"""

from __future__ import annotations

import html
import io
import json
import logging
import math
import queue
import ssl
import time
import urllib.parse
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import TYPE_CHECKING, Any

from fogmesh import codec
from fogmesh.dashboard.attempts import Refused, source_of
from fogmesh.dashboard.exposure import client_address, relayed
from fogmesh.dashboard.guard import SECURITY_HEADERS, host_allowed, host_of, same_origin
from fogmesh.dashboard.http_server import HEAD_TIMEOUT_S, IDLE_TIMEOUT_S, DeadlineReader
from fogmesh.dashboard.sessions import Session

if TYPE_CHECKING:
    from fogmesh.dashboard.server import Dashboard

log = logging.getLogger("fogmesh.dashboard")

COOKIE = "fogmesh_session"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
PUBLIC = ("/login", "/static/style.css")     # served without a session
FAILED_LOGIN_DELAY_S = 1.0                   # every wrong password waits this long before its answer


def handler_class(app: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        dashboard = app
    return Handler


def event(name: str, data: bytes) -> bytes:
    """One server-sent event; ``data`` is JSON (one line: orjson writes no newlines)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    protocol_version = "HTTP/1.1"
    server_version = "fogmesh-dashboard"
    timeout = IDLE_TIMEOUT_S      # one read or write waits at most this
    head_timeout_s = HEAD_TIMEOUT_S   # a request (line, headers, body) arrives within this: http_server.py
    _deadline: float | None = None

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(self.head_timeout_s)
            self.connection.do_handshake()     # here, on this connection's thread, not in accept()
            self.connection.settimeout(self.timeout)
        raw = self.rfile.detach()              # the same socket, read under the request's deadline
        self.rfile = io.BufferedReader(DeadlineReader(raw, self.connection, deadline=lambda: self._deadline,
                                                      idle_s=self.timeout))

    def handle_one_request(self) -> None:
        self._deadline = time.monotonic() + self.head_timeout_s
        super().handle_one_request()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("http %s " + fmt, self.client_address[0], *args)

    # -- answers -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, *, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: Any, *, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", extra=extra)

    def _redirect(self, where: str, *, extra: dict[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", extra={"Location": where, **(extra or {})})

    # -- the checks ----------------------------------------------------------------------
    def _host_ok(self) -> bool:
        """Refuse, before anything else, a Host this dashboard is not served under."""
        header = self.headers.get("Host")
        if host_allowed(header, self.dashboard.names):
            return True
        name = host_of(header) or "(none)"
        self.dashboard.lines.warning("host", source_of(self.client_address[0]), "dashboard: refused a request from "
                                     "%s for host %r (not a name this dashboard serves)", self.client_address[0],
                                     name)
        self._json(HTTPStatus.FORBIDDEN, {"error": f"this dashboard does not answer to the name {name!r}; "
                                                   "if that name is yours, start it with --server-name " + name})
        return False

    def _token(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            morsel = SimpleCookie(raw).get(COOKIE)
        except CookieError:
            return None
        return morsel.value if morsel is not None else None

    def _session(self) -> Session | None:
        return self.dashboard.session(self._token())

    def _relayed(self) -> bool:
        return relayed(self.headers.keys())

    def _client(self) -> str:
        """The client's address: the peer's, or the one a ``--trusted-proxy`` names."""
        return client_address(self.client_address[0], self.headers, self.dashboard.trusted_proxies)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    # -- GET -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        self.dashboard.refresh_users()
        path = self._path()
        session = self._session()
        if path == "/login":
            if not self.dashboard.login_required or session is not None:
                self._redirect("/")
            else:
                self._login_page(HTTPStatus.OK)
            return
        if self.dashboard.login_required and session is None and path not in PUBLIC:
            if path in ("/", "/index.html"):
                self._redirect("/login")
            else:
                self._json(HTTPStatus.UNAUTHORIZED, {"error": "log in first: /login"})
            return
        if path in STATIC:
            name, ctype = STATIC[path]
            body = resources.files("fogmesh.dashboard").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, ctype)
        elif path == "/events":
            self._stream(session)
        elif path == "/api/snapshot":
            self._send(HTTPStatus.OK, self.dashboard.snapshot(), "application/json")
        elif path == "/api/hello":
            self._json(HTTPStatus.OK, self.dashboard.hello(session, relayed=self._relayed()))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def _login_page(self, status: int, message: str = "", *, extra: dict[str, str] | None = None) -> None:
        page = resources.files("fogmesh.dashboard").joinpath("static", "login.html").read_text()
        note = f'<p class="error" id="login-error">{html.escape(message)}</p>' if message else ""
        self._send(status, page.replace("<!--message-->", note).encode(), "text/html; charset=utf-8",
                   extra=extra)

    # -- POST ----------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        # The body is read first, whatever follows: left unread, it would be taken
        # for the next request on this connection.
        body = self._body()
        if body is None or not self._host_ok():
            return
        self.dashboard.refresh_users()
        if not same_origin(self.headers.get("Origin"), self.headers.get("Host"), tls=self.dashboard.tls):
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request refused"})
            return
        path = self._path()
        if path == "/login":
            self._login(body)
            return
        if path == "/logout":
            self.dashboard.close_session(self._token())
            self._redirect("/login", extra={"Set-Cookie": self._cookie("", max_age=0)})
            return
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["api", "actuators"]:
            self._json(HTTPStatus.NOT_FOUND, {"error": "POST /api/actuators/{device}/{actuator}"})
            return
        session = self._session()
        if self.dashboard.login_required and session is None:
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "log in first: /login"})
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send Content-Type: application/json"})
            return
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            return
        status, answer = self.dashboard.actuate(parts[2], parts[3], parsed, session=session,
                                                address=self._client(), relayed=self._relayed())
        self._json(status, answer)

    def _body(self, limit: int = 4096) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= limit:
            self.close_connection = True             # the body stays unread: this connection is done
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {limit} bytes"})
            return None
        return self.rfile.read(length)

    def _cookie(self, value: str, *, max_age: int | None = None) -> str:
        cookie = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
        if self.dashboard.tls:
            cookie += "; Secure"
        if max_age is not None:
            cookie += f"; Max-Age={max_age}"
        return cookie

    def _login(self, body: bytes) -> None:
        dash = self.dashboard
        if not dash.login_required:
            self._redirect("/")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            self._login_page(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the login form")
            return
        form = urllib.parse.parse_qs(body.decode(errors="replace"), max_num_fields=4)
        name = (form.get("user") or [""])[0][:64]
        password = (form.get("password") or [""])[0][:1024]
        address = self._client()
        attempt = dash.admit_login(address, name)          # before any hash: see attempts.py
        if isinstance(attempt, Refused):
            dash.lines.warning("login", source_of(address), "dashboard: login for %r from %s not tried: %s", name,
                               address, attempt.message)
            status = HTTPStatus.SERVICE_UNAVAILABLE if attempt.reason == "busy" else HTTPStatus.TOO_MANY_REQUESTS
            self._login_page(status, attempt.message,
                             extra={"Retry-After": str(max(1, math.ceil(attempt.retry_after_s)))})
            return
        user = None
        try:
            user = dash.users.verify(name, password)
        finally:
            failures = dash.settle_login(attempt, ok=user is not None)
        if user is None:
            dash.lines.warning("failed", source_of(address), "dashboard: failed login for %r from %s (%d in a row)",
                               name, address, failures)
            time.sleep(FAILED_LOGIN_DELAY_S)
            self._login_page(HTTPStatus.UNAUTHORIZED, "wrong user name or password")
            return
        session = dash.open_session(user)
        log.info("dashboard: %s (%s) logged in from %s", user.name, user.role, address)
        self._redirect("/", extra={"Set-Cookie": self._cookie(session.token)})

    # -- the event stream ----------------------------------------------------------------
    def _stream(self, session: Session | None) -> None:
        dash = self.dashboard
        who = session.user if session is not None else None
        q = dash.open_stream(who)
        if isinstance(q, str) and q == "user":
            dash.lines.warning("pages", str(who), "dashboard: %s opened more pages than %d at once; refused one", who,
                               dash.quota.per_user)
            self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": f"{who} has {dash.quota.per_user} pages open: "
                                                      "close one"}, extra={"Retry-After": "5"})
            return
        if isinstance(q, str):
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{dash.quota.total} pages open: try again later"},
                       extra={"Retry-After": "5"})
            return
        token = session.token if session is not None else None
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 1000\n" + event("hello", codec.encode(dash.hello(session,
                                                                                     relayed=self._relayed()))))
            self.wfile.flush()
            while True:
                try:
                    data = q.get(timeout=15)
                except queue.Empty:
                    data = b": keep-alive\n\n"
                if data is None:
                    return
                if dash.login_required and dash.session(token) is None:
                    return                            # logged out, or the session ran out
                self.wfile.write(data)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            return                                   # the page went away
        finally:
            dash.close_stream(q, who)
