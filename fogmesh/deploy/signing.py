"""Ed25519 keys and signatures for bundles, desired states and join tokens,
and the sealed boxes that carry a joining box's new identity (the one module
that imports ``cryptography``).

Why Ed25519: small keys (32 bytes) an operator can paste, fast checks on a
Pi, no parameters to get wrong. A key's id is the first 16 hex digits of the
SHA-256 of its raw public bytes: signatures name the key that made them, so
an agent trusting several keys (rotation) checks only the one named.

Files: the private key is PKCS#8 PEM (``fogmesh bundle keygen`` writes it
with mode 0600); the public key is one line, ``ed25519 <base64> <id>``, the
form ``--trust-key`` takes (a path to such a file, or the line itself).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fogmesh.errors import DeployRefused

__all__ = ["BoxKey", "PublicKey", "SigningKey", "TrustStore", "key_id_of", "seal"]


def key_id_of(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes

    @property
    def key_id(self) -> str:
        return key_id_of(self.raw)

    def line(self) -> str:
        """The one-line form: ``ed25519 <base64> <id>``."""
        return f"ed25519 {base64.b64encode(self.raw).decode()} {self.key_id}"

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """A public key line, or the path of a file holding one."""
        text = text.strip()
        if not text.startswith("ed25519 "):
            path = Path(text)
            try:
                text = path.read_text().strip()
            except OSError as exc:
                raise DeployRefused("unknown_key", f"cannot read the trust key {path}: {exc}; "
                                    "give the file `fogmesh bundle keygen` wrote (*.pub) or its line") from exc
        parts = text.split()
        try:
            if parts[0] != "ed25519":
                raise ValueError("not an ed25519 key line")
            raw = base64.b64decode(parts[1], validate=True)
            Ed25519PublicKey.from_public_bytes(raw)
        except (IndexError, ValueError) as exc:
            raise DeployRefused("unknown_key", f"not a fogmesh public key ({exc}): expected a line "
                                "`ed25519 <base64> <id>` as `fogmesh bundle keygen` writes") from exc
        return cls(raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
            return True
        except InvalidSignature:
            return False


class SigningKey:
    """An operator's private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise DeployRefused("bad_key", f"cannot load the signing key {path}: {exc}; "
                                "make one with `fogmesh bundle keygen`") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise DeployRefused("bad_key", f"{path} is not an Ed25519 key; make one with `fogmesh bundle keygen`")
        return cls(key)

    def save(self, path: str | Path) -> Path:
        """Write the private key (mode 0600) and ``<path>.pub`` beside it; returns the .pub path."""
        p = Path(path)
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        p.touch(mode=0o600, exist_ok=False)
        p.write_bytes(pem)
        pub = p.with_name(p.name + ".pub")
        pub.write_text(self.public.line() + "\n")
        return pub

    @property
    def public(self) -> PublicKey:
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(raw)

    def sign(self, data: bytes) -> dict[str, str]:
        """A signature entry as documents carry it: ``{"key": id, "sig": base64}``."""
        return {"key": self.public.key_id, "sig": base64.b64encode(self._key.sign(data)).decode()}


class TrustStore:
    """The keys an agent trusts (``--trust-key``, several for rotation);
    ``who`` says who trusts them in refusals (``fogmesh deploy`` checks as
    the agents will)."""

    def __init__(self, keys: Iterable[PublicKey] = (), *, who: str = "this agent trusts") -> None:
        self.keys: Mapping[str, PublicKey] = {k.key_id: k for k in keys}
        self.who = who

    def __bool__(self) -> bool:
        return bool(self.keys)

    def verify(self, data: bytes, signatures: Sequence[object], *, what: str) -> str:
        """The id of a trusted key whose signature over ``data`` holds, or
        :class:`DeployRefused` saying why none does."""
        if not self.keys:
            raise DeployRefused("no_trust_key", f"{what}: {self.who} no deployment key; give "
                                "--trust-key FILE.pub (the key `fogmesh bundle keygen` made)")
        if not signatures:
            raise DeployRefused("unsigned", f"{what} is not signed; sign it with `fogmesh bundle sign`")
        named = []
        for entry in signatures:
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                continue
            named.append(entry["key"])
            key = self.keys.get(entry["key"])
            if key is None:
                continue
            try:
                sig = base64.b64decode(str(entry.get("sig", "")), validate=True)
            except ValueError:
                raise DeployRefused("bad_signature", f"{what}: signature by key {key.key_id} is not base64") from None
            if key.verify(sig, data):
                return key.key_id
            raise DeployRefused("bad_signature", f"{what}: the signature by key {key.key_id} does not match "
                                "its contents (changed after signing, or signed by another key with that id)")
        raise DeployRefused("unknown_key", f"{what} is signed by key(s) {', '.join(named) or 'none'}, none of which "
                            f"{self.who} ({', '.join(self.keys)}); sign it with a trusted key "
                            "(`fogmesh bundle sign --key`) or add its key with --trust-key")


# -- sealed boxes (fogmesh join) ---------------------------------------------------------------
_SEAL_INFO = b"fogmesh join v1"


def _box_cipher(shared: bytes, ephemeral: bytes, recipient: bytes) -> ChaCha20Poly1305:
    key = HKDF(algorithm=SHA256(), length=32, salt=ephemeral + recipient, info=_SEAL_INFO).derive(shared)
    return ChaCha20Poly1305(key)


def seal(recipient: bytes, plaintext: bytes) -> bytes:
    """``plaintext`` readable only by the holder of the X25519 key whose raw
    public half is ``recipient``: an ephemeral X25519 key agreement, HKDF-SHA256
    and ChaCha20-Poly1305 (a sealed box: 32 bytes of ephemeral key, then the
    ciphertext and its tag). What the registrar sends a joining box."""
    if len(recipient) != 32:
        raise ValueError("a box key is 32 bytes")
    ephemeral = X25519PrivateKey.generate()
    mine = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    return mine + _box_cipher(shared, mine, recipient).encrypt(b"\0" * 12, plaintext, None)


class BoxKey:
    """A joining box's one-time X25519 key: it sends the public half with its
    join request and opens the sealed answer with the private half."""

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> BoxKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, raw: bytes) -> BoxKey:
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def raw(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())

    @property
    def public(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def open(self, sealed: bytes) -> bytes:
        """The plaintext of :func:`seal` to this key; ValueError when it was
        sealed to another key or changed on the way."""
        if len(sealed) < 32 + 16:
            raise ValueError("too short for a sealed box")
        ephemeral = sealed[:32]
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(ephemeral))
            return _box_cipher(shared, ephemeral, self.public).decrypt(b"\0" * 12, sealed[32:], None)
        except Exception as exc:           # InvalidTag, a low-order point
            raise ValueError("the sealed answer does not open with this box's key") from exc
