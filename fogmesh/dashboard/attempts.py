"""Login attempts, limited before a password is hashed. Pure: the clock is
passed in (a fake one in the tests); the HTTP side asks :meth:`LoginGate.admit`
before it hashes and tells :meth:`LoginGate.settle` what came of it.

Why before the hash: a scrypt check takes ~50 ms and 32 MiB (:mod:`.auth`).
Fifty wrong passwords sent at once, each let through to its hash, held 1.5 GB
at once and kept both cores busy (issue #37). So an attempt is refused,
before any hash, when

- another attempt from the same source is still being checked (one at a
  time per source: a burst from one address gets 429 at once);
- that source has failed too often: after ``pair_free`` failures in a row for
  one user name, or ``source_free`` for any names, each further try waits
  2, 4, 8 ... s (at most ``max_wait_s``); quiet for ``forget_s``, it is
  forgotten;
- ``hashes_at_once`` hashes are already running (503: the memory a burst
  from many addresses may take is this many hashes' worth).

Why by source and not by user name: counted by name, an attacker's wrong
passwords for ``alice`` made alice herself wait, wherever she logged in
from. Counted by source (an IPv4 address; an IPv6 /64, which one host may
hold whole), the attacker waits and alice, from her own address, does not.
A success clears that source's count for that name, not the source's count
for all names (an attacker with a login of their own cannot wipe it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable

PAIR_FREE = 3              # failures in a row for one name from one source before the waits start
SOURCE_FREE = 10           # ... for any names from one source
MAX_WAIT_S = 300.0
FORGET_S = 900.0           # a source quiet this long starts afresh
HASHES_AT_ONCE = 2         # scrypt checks running at once (32 MiB each)
KEPT = 10_000              # counts kept; the stalest go first


def source_of(address: str) -> str:
    """Where a login comes from, for counting: an IPv4 address as it is, an
    IPv6 address by its /64, an IPv4-mapped IPv6 address as the IPv4 one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Refused:
    """Not tried: ``busy`` (every hash slot taken: 503) or ``slowed`` (this
    source waits: 429), with the seconds to wait and why, for the page."""
    reason: str
    retry_after_s: float
    message: str


@dataclass(frozen=True)
class Attempt:
    """A login let through to its hash; settle it once, whatever happens."""
    source: str
    name: str


@dataclass
class LoginGate:
    clock: Callable[[], float]
    pair_free: int = PAIR_FREE
    source_free: int = SOURCE_FREE
    max_wait_s: float = MAX_WAIT_S
    forget_s: float = FORGET_S
    hashes_at_once: int = HASHES_AT_ONCE
    kept: int = KEPT
    _failures: dict[tuple[str, ...], tuple[int, float]] = field(default_factory=dict)   # key -> (count, last)
    _checking: set[str] = field(default_factory=set)                                     # sources being checked

    def admit(self, address: str, name: str) -> Attempt | Refused:
        """May a login from ``address`` for ``name`` be checked now?"""
        source = source_of(address)
        if source in self._checking:
            return Refused("slowed", 1.0, "another login from this address is being checked: try again in 1 s")
        now = self.clock()
        wait = max(self._wait(("source", source), self.source_free, now),
                   self._wait(("pair", source, name), self.pair_free, now))
        if wait > 0:
            return Refused("slowed", wait, f"too many failed logins: try again in {max(1, round(wait))} s")
        if len(self._checking) >= self.hashes_at_once:
            return Refused("busy", 1.0, "too many logins at once: try again in 1 s")
        self._checking.add(source)
        return Attempt(source, name)

    def settle(self, attempt: Attempt, *, ok: bool) -> int:
        """The attempt's outcome; returns the failures in a row for its name from its source."""
        self._checking.discard(attempt.source)
        pair: tuple[str, ...] = ("pair", attempt.source, attempt.name)
        if ok:
            self._failures.pop(pair, None)
            return 0
        now = self.clock()
        source: tuple[str, ...] = ("source", attempt.source)
        for key in (source, pair):
            count, last = self._failures.get(key, (0, now))
            self._failures[key] = (1 if now - last > self.forget_s else count + 1, now)
        if len(self._failures) > self.kept:
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:len(self._failures) // 10]:
                del self._failures[key]
        return self._failures[pair][0]

    @property
    def checking(self) -> int:
        """Attempts let through and not settled (each holds a hash slot)."""
        return len(self._checking)

    def _wait(self, key: tuple[str, ...], free: int, now: float) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        if count < free or now - last > self.forget_s:
            return 0.0
        delay = min(self.max_wait_s, 2.0 ** (count - free + 1))
        return max(0.0, last + delay - now)
