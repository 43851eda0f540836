"""Which digest a registry serves for an image's tag: ``HEAD
/v2/REPOSITORY/manifests/TAG`` with every manifest type accepted, its
``Docker-Content-Digest`` (the distribution API; what ``podman push
--digestfile`` and ``skopeo inspect`` report). No engine and no pull: the
digest agents will pull by is the registry's, whatever copy this box holds.

Logins come from the files podman and docker keep them in
(``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``~/.config/containers/auth.json``, ``~/.docker/config.json``: written by
``podman login`` / ``docker login``; credential helpers are not asked),
answering a ``Basic`` or ``Bearer`` (token) challenge. HTTPS, verified;
plain HTTP or unverified TLS only for a registry that registries.conf marks
``insecure`` (as podman does) or one on loopback. The decisions are in
:mod:`fogmesh.deploy.image_ref`.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from fogmesh.deploy.image_ref import (
    ImageRef,
    accept_header,
    credentials,
    digest_of,
    insecure_registries,
    may_use_http,
    parse_challenge,
    token_query,
)
from fogmesh.errors import FogmeshError

__all__ = ["RegistryError", "served_digest"]


class RegistryError(FogmeshError, RuntimeError):
    """The registry did not say which digest the tag names: why, and what to do."""


class _Unreachable(Exception):
    """This scheme got no answer: try the next (HTTPS, then HTTP where allowed)."""


def served_digest(ref: ImageRef, *, timeout: float = 30.0, env: Mapping[str, str] | None = None) -> str:
    """The digest the registry serves for ``ref``'s tag, or :class:`RegistryError`."""
    env = os.environ if env is None else env
    insecure = may_use_http(ref.registry, insecure_registries(_read_all(_registries_confs(env))))
    login = credentials(_auth_docs(env), ref)
    why = []
    for scheme in ("https", "http") if insecure else ("https",):
        try:
            return _ask(f"{scheme}://{ref.api_host}", ref, login=login, verify=not insecure, timeout=timeout)
        except _Unreachable as exc:
            why.append(f"{scheme}: {exc}")
    if ref.registry == "localhost":
        raise RegistryError("localhost/... names an image built on this box, in no registry: push it to one the "
                            "agents can pull from (podman push IMAGE REGISTRY/NAME:TAG) and give that name")
    hint = ""
    if not insecure and any("SSL" in w or "certificate" in w for w in why):
        hint = (f"; a registry without TLS (or with a certificate this box does not trust) must be marked "
                f"insecure = true for {ref.registry} in registries.conf, as podman needs too")
    raise RegistryError(f"the registry at {ref.registry} does not answer ({'; '.join(why)}){hint}")


def _ask(base: str, ref: ImageRef, *, login: tuple[str, str] | None, verify: bool, timeout: float) -> str:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = base + ref.manifest_path()
    authorization: str | None = None
    for attempt in range(2):
        try:
            with _open(url, "HEAD", authorization, context, timeout) as answer:
                digest = answer.headers.get("Docker-Content-Digest")
            if not digest:           # some registries leave it out of HEAD: the body's digest is the manifest's
                with _open(url, "GET", authorization, context, timeout) as answer:
                    digest = digest_of(answer.read())
            return str(digest)
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and attempt == 0:
                authorization = _authorize(exc.headers.get("WWW-Authenticate", ""), ref, login=login,
                                           context=context, timeout=timeout)
                continue
            raise RegistryError(_refusal(exc.code, ref, login=login, body=_body(exc))) from None
        except urllib.error.URLError as exc:
            raise _Unreachable(str(getattr(exc, "reason", exc))) from None
        except (OSError, ssl.SSLError) as exc:
            raise _Unreachable(str(exc)) from None
    raise RegistryError(f"{ref.registry} refused the login for {ref.repository}")     # the loop always returns


def _open(url: str, method: str, authorization: str | None, context: ssl.SSLContext, timeout: float) -> Any:
    headers = {"Accept": accept_header()}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, method=method, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout, context=context)


def _authorize(challenge: str, ref: ImageRef, *, login: tuple[str, str] | None, context: ssl.SSLContext,
               timeout: float) -> str:
    """The Authorization header that answers the registry's challenge."""
    scheme, params = parse_challenge(challenge)
    basic = ("Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()) if login else None
    if scheme == "basic":
        if basic is None:
            raise RegistryError(f"{ref.registry} wants a login: `podman login {ref.registry}` (or docker login) "
                                "on this box first")
        return basic
    if scheme != "bearer" or not params.get("realm"):
        raise RegistryError(f"{ref.registry} asks for an authentication this does not speak: {challenge[:120]}")
    query = urllib.parse.urlencode(token_query(params, ref))
    realm = params["realm"]
    headers = {"Authorization": basic} if basic else {}
    request = urllib.request.Request(f"{realm}{'&' if '?' in realm else '?'}{query}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise RegistryError(f"{realm} refused a token for {ref.repository} ({exc.code})"
                            + ("" if login else f": `podman login {ref.registry}` first")) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RegistryError(f"no token from {realm}: {exc}") from None
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    if not token:
        raise RegistryError(f"{realm} answered without a token")
    return f"Bearer {token}"


def _refusal(code: int, ref: ImageRef, *, login: tuple[str, str] | None, body: str) -> str:
    where = f"{ref.registry}/{ref.repository}:{ref.tag}"
    if code == 404:
        return (f"{ref.registry} has no {ref.repository}:{ref.tag} ({body or 'manifest unknown'}): push it first "
                f"(podman push IMAGE {where}), or check the name and tag")
    if code in (401, 403):
        return (f"{ref.registry} refused {'the login' if login else 'an anonymous pull'} for {ref.repository} "
                f"({code}{': ' + body if body else ''})" + ("" if login else f": `podman login {ref.registry}`"))
    return f"{ref.registry} answered {code} for {where}{': ' + body if body else ''}"


def _body(exc: urllib.error.HTTPError) -> str:
    """The registry's error code from an error body: ``MANIFEST_UNKNOWN``, ``UNAUTHORIZED``, ..."""
    try:
        errors = json.loads(exc.read() or b"{}").get("errors") or []
        return ", ".join(str(e.get("code", "")) for e in errors if isinstance(e, dict))
    except (ValueError, OSError, AttributeError):
        return ""


def _registries_confs(env: Mapping[str, str]) -> list[Path]:
    if env.get("CONTAINERS_REGISTRIES_CONF"):
        return [Path(env["CONTAINERS_REGISTRIES_CONF"])]
    home = Path(env.get("HOME") or Path.home())
    out = []
    for base in (Path("/etc/containers"), home / ".config" / "containers"):
        out.append(base / "registries.conf")
        out.extend(sorted((base / "registries.conf.d").glob("*.conf")))
    return out


def _auth_docs(env: Mapping[str, str]) -> list[dict[str, Any]]:
    home = Path(env.get("HOME") or Path.home())
    paths = [Path(env["REGISTRY_AUTH_FILE"])] if env.get("REGISTRY_AUTH_FILE") else []
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    paths += [home / ".config" / "containers" / "auth.json", home / ".docker" / "config.json"]
    docs = []
    for text in _read_all(paths):
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


def _read_all(paths: list[Path]) -> list[str]:
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    return texts
