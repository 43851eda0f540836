"""An image reference as a registry reads it, and the decisions of asking a
registry which digest a tag names (pure: :mod:`fogmesh.deploy.registry`
does the HTTP).

``registry.lan:5000/detect:2`` is registry ``registry.lan:5000``,
repository ``detect``, tag ``2``; ``python:3.11-slim`` is Docker Hub's
``library/python`` (``registry-1.docker.io``), as podman and docker read it.
A tag is pinned to the digest the registry serves for it (its
``Docker-Content-Digest``, with every manifest type accepted, so a
multi-platform image is pinned by its index and each agent pulls its own
platform's image), never to a local copy's: an image built on the
operator's box has a digest of its own until it is pushed.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")

#: Every manifest type, index and list types first: the digest of what the registry serves for the tag.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass(frozen=True)
class ImageRef:
    registry: str        # host[:port], as written (docker.io for Docker Hub)
    repository: str      # library/python on Docker Hub
    tag: str

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def manifest_path(self, reference: str | None = None) -> str:
        return f"/v2/{self.repository}/manifests/{reference or self.tag}"

    def pinned(self, digest: str) -> str:
        """Fully qualified (``docker.io/library/python@...``): the registry asked, not
        whichever one an agent's short-name search would try first."""
        return f"{self.registry}/{self.repository}@{digest}"


def parse_ref(ref: str) -> ImageRef:
    """``[REGISTRY/]REPOSITORY[:TAG]``; ValueError for one with a digest or no name."""
    if "@" in ref:
        raise ValueError(f"{ref} is pinned by digest already")
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    if not name or not tag:
        raise ValueError(f"{ref!r} is not an image reference")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or repository != repository.lower():
        raise ValueError(f"{ref!r}: a repository name is lower case")
    return ImageRef(registry=registry, repository=repository, tag=tag)


def accept_header() -> str:
    return ", ".join(MANIFEST_TYPES)


def digest_of(body: bytes) -> str:
    """A manifest's digest, from its bytes (a registry that sends no ``Docker-Content-Digest``)."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="...",service="...",scope="..."`` as
    (scheme, parameters); the scheme lower case."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip(" ,")
        if eq + 1 < len(rest) and rest[eq + 1] == '"':
            end = rest.find('"', eq + 2)
            end = len(rest) if end < 0 else end
            params[key] = rest[eq + 2:end]
            i = end + 1
        else:
            end = rest.find(",", eq + 1)
            end = len(rest) if end < 0 else end
            params[key] = rest[eq + 1:end].strip()
            i = end + 1
    return scheme.lower(), params


def token_query(params: Mapping[str, str], ref: ImageRef) -> dict[str, str]:
    """The query of a bearer token request for pulling ``ref``."""
    query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
    if params.get("service"):
        query["service"] = params["service"]
    return query


def insecure_registries(conf_texts: Iterable[str]) -> set[str]:
    """The registries that registries.conf files (v2 TOML) mark ``insecure``
    (podman pulls from them over plain HTTP or without verifying TLS).
    Unreadable files are skipped: podman would refuse them itself."""
    found: set[str] = set()
    for text in conf_texts:
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        for entry in conf.get("registry", []):
            if isinstance(entry, dict) and entry.get("insecure") is True:
                location = str(entry.get("location") or entry.get("prefix") or "")
                if location:
                    found.add(location.split("/", 1)[0])
        old = conf.get("registries", {}).get("insecure", {}).get("registries", [])   # v1 format
        found.update(str(r) for r in old if isinstance(r, str))
    return found


def may_use_http(registry: str, insecure: set[str]) -> bool:
    """Plain HTTP (or unverified TLS) only for a registry marked insecure, or on loopback."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    return registry in insecure or host in LOOPBACK


def credentials(auth_docs: Iterable[Mapping[str, Any]], ref: ImageRef) -> tuple[str, str] | None:
    """The login for ``ref`` in containers-auth.json / docker config.json
    documents (first match wins, the most specific key first)."""
    keys = [f"{ref.registry}/{ref.repository}", ref.registry]
    if ref.registry == DOCKER_HUB:
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    for doc in auth_docs:
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            continue
        for key in keys:
            entry = auths.get(key) or auths.get(f"https://{key}")
            if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    continue
                return user, password
    return None
