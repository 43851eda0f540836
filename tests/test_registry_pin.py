"""``fogmesh bundle build --image-kind NAME=REGISTRY/IMAGE:TAG`` pins the tag
to the digest the registry serves (its ``Docker-Content-Digest``), never a
local copy's: against Debian's docker-registry on loopback, images put in
through its HTTP API (no engine needed), with and without a login. The
reference and challenge parsing is pure and runs everywhere.
(With podman: a locally built image pushed by its tag and deployed,
tests/test_deploy_images.py.)"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.deploy.image_ref import (
    DOCKER_HUB,
    credentials,
    insecure_registries,
    may_use_http,
    parse_challenge,
    parse_ref,
    token_query,
)
from fogmesh.deploy.images import pin
from fogmesh.errors import DeployRefused
from tests.loopback_registry import OCI_INDEX, OCI_MANIFEST, LoopbackRegistry

pytestmark = pytest.mark.timeout(60)
registry_needed = pytest.mark.skipif(not shutil.which("docker-registry"), reason="docker-registry is not installed")


# -- pure: what a reference, a challenge and the configuration files say -----------------

def test_a_reference_is_read_as_podman_and_docker_read_it():
    r = parse_ref("registry.lan:5000/team/detect:2")
    assert (r.registry, r.repository, r.tag) == ("registry.lan:5000", "team/detect", "2")
    assert r.manifest_path() == "/v2/team/detect/manifests/2" and r.api_host == "registry.lan:5000"
    hub = parse_ref("python:3.11-slim")
    assert (hub.registry, hub.repository, hub.tag, hub.api_host) == (DOCKER_HUB, "library/python", "3.11-slim",
                                                                      "registry-1.docker.io")
    assert hub.pinned("sha256:ab") == "docker.io/library/python@sha256:ab"    # no short name left to resolve
    assert parse_ref("localhost/resize").tag == "latest" and parse_ref("localhost/resize").registry == "localhost"
    assert parse_ref("me/tool:1").repository == "me/tool" and parse_ref("me/tool:1").registry == DOCKER_HUB
    for bad in ("x@sha256:00", "Upper/Case:1", ":1"):
        with pytest.raises(ValueError):
            parse_ref(bad)


def test_a_bearer_challenge_gives_the_token_request():
    scheme, params = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                     'scope="repository:library/python:pull"')
    assert scheme == "bearer" and params["realm"] == "https://auth.docker.io/token"
    assert token_query(params, parse_ref("python:3")) == {"scope": "repository:library/python:pull",
                                                          "service": "registry.docker.io"}
    assert token_query({"realm": "r"}, parse_ref("r.lan/a/b:1")) == {"scope": "repository:a/b:pull"}
    assert parse_challenge('Basic realm="fogmesh"') == ("basic", {"realm": "fogmesh"})


def test_insecure_registries_and_logins_come_from_podmans_and_dockers_files():
    confs = ['[[registry]]\nlocation = "reg.lan:5000"\ninsecure = true\n[[registry]]\nlocation = "safe.lan"\n',
             '[registries.insecure]\nregistries = ["old.lan"]\n', "not toml ["]
    insecure = insecure_registries(confs)
    assert insecure == {"reg.lan:5000", "old.lan"}
    assert may_use_http("reg.lan:5000", insecure) and may_use_http("127.0.0.1:5000", set())
    assert not may_use_http("safe.lan", insecure)
    auth = base64.b64encode(b"fog:pw").decode()
    docs = [{"auths": {"other.lan": {"auth": auth}}}, {"auths": {"reg.lan:5000": {"auth": auth}}}]
    assert credentials(docs, parse_ref("reg.lan:5000/a:1")) == ("fog", "pw")
    assert credentials(docs, parse_ref("nowhere.lan/a:1")) is None
    assert credentials([{"auths": {"https://index.docker.io/v1/": {"auth": auth}}}], parse_ref("python:3")) == \
        ("fog", "pw")


# -- against a registry ---------------------------------------------------------------------

@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch) -> Path:
    """No login or registries.conf of this box's user in the way."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "registries.conf").write_text("")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "registries.conf"))
    return tmp_path


@pytest.fixture
def registry(clean_env: Path) -> Iterator[LoopbackRegistry]:
    r = LoopbackRegistry(clean_env / "registry")
    yield r
    r.stop()


@pytest.fixture
def private(clean_env: Path) -> Iterator[LoopbackRegistry]:
    r = LoopbackRegistry(clean_env / "private", login=("fog", "s3cret"))
    yield r
    r.stop()


@registry_needed
def test_a_tag_is_pinned_to_the_digest_of_the_manifest_the_registry_serves(registry: LoopbackRegistry):
    served = registry.put_image("kinds/sum", "1")
    assert pin(f"{registry.host}/kinds/sum:1") == f"{registry.host}/kinds/sum@{served}"
    pinned = f"{registry.host}/kinds/sum@{served}"
    assert pin(pinned) == pinned                           # pinned already: as given


@registry_needed
def test_a_multi_platform_tag_is_pinned_by_its_index_so_each_agent_pulls_its_own(registry: LoopbackRegistry):
    arm = registry.put_image("kinds/sum", "arm64-only", arch="arm64")
    amd = registry.put_image("kinds/sum", "amd64-only", arch="amd64")
    entry = {"mediaType": OCI_MANIFEST, "size": 0}
    index = registry.put("kinds/sum", "2", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**entry, "digest": arm, "size": size_of(registry, arm), "platform": {"architecture": "arm64", "os": "linux"}},
        {**entry, "digest": amd, "size": size_of(registry, amd), "platform": {"architecture": "amd64", "os": "linux"}},
    ]}, OCI_INDEX)
    assert pin(f"{registry.host}/kinds/sum:2") == f"{registry.host}/kinds/sum@{index}"


def size_of(registry: LoopbackRegistry, digest: str) -> int:
    import urllib.request
    request = urllib.request.Request(f"http://{registry.host}/v2/kinds/sum/manifests/{digest}", method="HEAD",
                                     headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.headers["Content-Length"])


@registry_needed
def test_a_tag_the_registry_does_not_have_and_an_image_only_on_this_box_are_refused_with_what_to_do(
        registry: LoopbackRegistry):
    registry.put_image("kinds/sum", "1")
    with pytest.raises(DeployRefused, match="has no kinds/sum:9.*push it first"):
        pin(f"{registry.host}/kinds/sum:9")
    with pytest.raises(DeployRefused, match="built on this box, in no registry"):
        pin("localhost/fogmesh-test-sum:bookworm")


@registry_needed
def test_a_registry_behind_a_login_takes_the_one_podman_login_saved(private: LoopbackRegistry, clean_env: Path,
                                                                    monkeypatch):
    served = private.put_image("kinds/sum", "1")
    with pytest.raises(DeployRefused, match=f"wants a login: `podman login {private.host}`"):
        pin(f"{private.host}/kinds/sum:1")
    auth = clean_env / "auth.json"                         # what `podman login --authfile` writes
    auth.write_text(json.dumps({"auths": {private.host: {"auth": base64.b64encode(b"fog:s3cret").decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    assert pin(f"{private.host}/kinds/sum:1") == f"{private.host}/kinds/sum@{served}"
    auth.write_text(json.dumps({"auths": {private.host: {"auth": base64.b64encode(b"fog:wrong").decode()}}}))
    with pytest.raises(DeployRefused, match="refused the login"):
        pin(f"{private.host}/kinds/sum:1")
