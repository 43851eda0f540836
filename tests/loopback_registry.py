"""Debian's docker-registry (distribution 2.8) on a free loopback port, plain
HTTP, optionally behind a login (htpasswd, bcrypt): where image kinds are
pushed and pulled from in the tests. Images go in with ``podman push``, or
straight through the registry's HTTP API (:meth:`LoopbackRegistry.put`:
a config blob and a manifest, no engine needed)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

from fogmesh.broker.ports import free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class LoopbackRegistry:
    def __init__(self, where: Path, *, login: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.login = login
        where.mkdir(parents=True, exist_ok=True)
        auth = ""
        if login is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt  # bcrypt, as htpasswd -B writes
                hashed = crypt.crypt(login[1], crypt.mksalt(crypt.METHOD_BLOWFISH))
            (where / "htpasswd").write_text(f"{login[0]}:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: fogmesh-test\n    path: {where / 'htpasswd'}\n"
        conf = where / "registry.yml"
        conf.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {where / 'data'}\n"
                        f"http:\n  addr: {self.host}\n{auth}")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(where / "registry.log", "ab"))
        self.registries_conf = where / "registries.conf"
        self.registries_conf.write_text(f'[[registry]]\nlocation = "{self.host}"\ninsecure = true\n')
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, f"docker-registry exited: {(where / 'registry.log').read_text()}"
                assert time.monotonic() < deadline, "docker-registry did not start"
                time.sleep(0.1)                              # starting; it has no readiness signal but its port

    def push(self, image: str, name: str, where: Path) -> str:
        """Push ``image`` as ``name`` with podman; its reference pinned by the registry's digest."""
        digest_file = where / f"{name.replace(':', '-')}.digest"
        done = subprocess.run(["podman", "push", "-q", "--tls-verify=false", "--digestfile", str(digest_file), image,
                               f"docker://{self.host}/{name}"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"podman push failed ({done.returncode}): {done.stderr[-1500:]}"
        return f"{self.host}/{name.split(':')[0]}@{digest_file.read_text().strip()}"

    # -- the registry's HTTP API, for images made without an engine ----------------------
    def _request(self, method: str, path: str, body: bytes = b"", content_type: str = "") -> tuple[int, dict]:
        headers = {"Content-Type": content_type} if content_type else {}
        if self.login is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.login).encode()).decode()
        url = path if path.startswith("http") else f"http://{self.host}{path}"
        request = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None, method=method,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers)

    def blob(self, repository: str, data: bytes) -> dict:
        """Upload ``data`` as a blob (monolithic upload); its descriptor."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _, headers = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        self._request("PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream")
        return {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(data)}

    def put(self, repository: str, tag: str, document: dict, media_type: str) -> str:
        """Put a manifest (or index) under ``tag``: the digest of the bytes sent."""
        body = json.dumps(document).encode()
        self._request("PUT", f"/v2/{repository}/manifests/{tag}", body, media_type)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def put_image(self, repository: str, tag: str, *, arch: str = "amd64") -> str:
        """A minimal image (a config, no layers) under ``tag``: its manifest's digest."""
        config = self.blob(repository, json.dumps({"architecture": arch, "os": "linux",
                                                   "rootfs": {"type": "layers", "diff_ids": []}}).encode())
        return self.put(repository, tag, {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                                          "layers": []}, OCI_MANIFEST)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
