"""The registrar's files, written whole or not at all: the spent-token store,
the broker's password and ACL files, the identities it keeps."""

from __future__ import annotations

import os
from pathlib import Path

from fogmesh.enrollment.spent import SpentTokens


class SpentFile:
    """The store in one file, replaced whole (written, synced, renamed) before
    any login is minted for a token: a registrar killed at any point never
    lets a token work twice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> SpentTokens:
        try:
            return SpentTokens.decode(self.path.read_bytes())
        except FileNotFoundError:
            return SpentTokens()

    def save(self, tokens: SpentTokens) -> None:
        write_atomically(self.path, tokens.encode(), mode=0o600)


def write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """``data`` as ``path``'s new contents, whole or not at all, its mode and group kept if it had them."""
    tmp = path.with_name(f".{path.name}.new")
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        owner = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
