"""The dashboard's limits against hostile input (issue #37), pure (fake
clocks, no sockets): login attempts limited before any password is hashed
and by source, not by user name; open pages per user; the users file read
again when it changes, and the sessions it ends; how the dashboard may be
exposed. tests/test_dashboard_hostile.py runs the same against the real
process over HTTP."""

from __future__ import annotations

import pytest

from fogmesh.dashboard.attempts import Attempt, LoginGate, Refused, source_of
from fogmesh.dashboard.auth import User, Users, UsersFileError
from fogmesh.dashboard.exposure import (
    INSECURE_FLAG,
    buttons_refused,
    client_address,
    insecure_warning,
    refusal,
    relayed,
)
from fogmesh.dashboard.sessions import Sessions
from fogmesh.dashboard.streams import StreamQuota
from fogmesh.dashboard.users_watch import FileStamp, UsersWatch, changes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(gate: LoginGate, address: str, name: str) -> int:
    attempt = gate.admit(address, name)
    assert isinstance(attempt, Attempt), attempt
    return gate.settle(attempt, ok=False)


# -- login attempts ------------------------------------------------------------------------------

def test_a_burst_from_one_address_gets_one_hash_and_the_rest_are_refused_before_theirs():
    gate = LoginGate(clock=Clock())
    first = gate.admit("10.0.0.9", "alice")
    assert isinstance(first, Attempt)
    for _ in range(49):
        refused = gate.admit("10.0.0.9", "alice")
        assert isinstance(refused, Refused) and refused.reason == "slowed" and refused.retry_after_s >= 1
    assert gate.checking == 1                          # one hash running, not fifty
    gate.settle(first, ok=False)
    assert isinstance(gate.admit("10.0.0.9", "alice"), Attempt)


def test_hashes_run_a_few_at_a_time_whatever_the_sources():
    gate = LoginGate(clock=Clock(), hashes_at_once=2)
    a, b = gate.admit("10.0.0.1", "alice"), gate.admit("10.0.0.2", "alice")
    assert isinstance(a, Attempt) and isinstance(b, Attempt)
    busy = gate.admit("10.0.0.3", "bob")
    assert isinstance(busy, Refused) and busy.reason == "busy" and busy.retry_after_s >= 1
    gate.settle(a, ok=True)
    assert isinstance(gate.admit("10.0.0.3", "bob"), Attempt)


def test_failures_for_a_name_slow_that_source_and_not_the_user_elsewhere():
    clock = Clock()
    gate = LoginGate(clock=clock, pair_free=3)
    assert [fail(gate, "10.0.0.66", "alice") for _ in range(3)] == [1, 2, 3]
    refused = gate.admit("10.0.0.66", "alice")
    assert isinstance(refused, Refused) and refused.retry_after_s == pytest.approx(2.0)
    assert isinstance(gate.admit("10.0.0.7", "alice"), Attempt)          # alice from her own address: no wait
    clock.now += 2
    fail(gate, "10.0.0.66", "alice")
    refused = gate.admit("10.0.0.66", "alice")
    assert isinstance(refused, Refused) and refused.retry_after_s == pytest.approx(4.0)    # doubling


def test_a_source_trying_many_names_is_slowed_too():
    gate = LoginGate(clock=Clock(), pair_free=3, source_free=10)
    for i in range(10):
        fail(gate, "10.0.0.66", f"user-{i}")
    refused = gate.admit("10.0.0.66", "somebody-else")
    assert isinstance(refused, Refused) and refused.reason == "slowed"
    assert isinstance(gate.admit("10.0.0.7", "somebody-else"), Attempt)


def test_a_success_clears_that_name_from_that_source_but_not_the_sources_other_failures():
    clock = Clock()
    gate = LoginGate(clock=clock, pair_free=3, source_free=4)
    for name in ("bob", "bob", "carol"):
        fail(gate, "10.0.0.66", name)
    ok = gate.admit("10.0.0.66", "mallory")           # the attacker's own login
    assert isinstance(ok, Attempt) and gate.settle(ok, ok=True) == 0
    fail(gate, "10.0.0.66", "dave")                   # the fourth failure from there, whatever succeeded
    assert isinstance(gate.admit("10.0.0.66", "erin"), Refused)


def test_a_source_quiet_long_enough_starts_afresh():
    clock = Clock()
    gate = LoginGate(clock=clock, pair_free=3, forget_s=900)
    for _ in range(5):
        clock.now += 60                      # each after the previous wait
        fail(gate, "10.0.0.66", "alice")
    assert isinstance(gate.admit("10.0.0.66", "alice"), Refused)
    clock.now += 901
    assert isinstance(gate.admit("10.0.0.66", "alice"), Attempt)


def test_the_failures_kept_are_bounded():
    gate = LoginGate(clock=Clock(), kept=100)
    for i in range(500):
        fail(gate, f"10.1.{i // 250}.{i % 250}", "alice")
    assert len(gate._failures) <= 100


@pytest.mark.parametrize("address,source", [("192.168.1.20", "192.168.1.20"),
                                            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
                                            ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
                                            ("::ffff:192.168.1.20", "192.168.1.20"),
                                            ("fe80::1%eth0", "fe80::/64"), ("not-an-address", "not-an-address")])
def test_a_source_is_an_ipv4_address_or_an_ipv6_slash_64(address, source):
    assert source_of(address) == source


# -- open pages ------------------------------------------------------------------------------------

def test_each_user_has_a_quota_of_pages_and_others_are_unaffected():
    quota = StreamQuota(per_user=6, total=64)
    assert [quota.open("bob") for _ in range(40)] == [None] * 6 + ["user"] * 34
    assert quota.open("alice") is None and quota.of("bob") == 6 and len(quota) == 7
    quota.close("bob")
    assert quota.open("bob") is None


def test_the_process_wide_bound_holds_and_without_logins_it_is_the_only_one():
    quota = StreamQuota(per_user=2, total=3)
    assert [quota.open(None) for _ in range(4)] == [None, None, None, "total"]
    assert quota.open("alice") == "total"
    quota.close(None)
    assert quota.open("alice") is None and len(quota) == 3


# -- the users file ----------------------------------------------------------------------------------

def test_the_users_file_is_read_again_when_its_stamp_changes_and_now_and_then_anyway():
    watch = UsersWatch(recheck_s=30)
    first = FileStamp(inode=11, size=300, mtime_ns=1)
    assert watch.reload(first, 0.0)                              # never read
    watch.read(first, 0.0)
    assert not watch.reload(first, 1.0)
    assert watch.reload(FileStamp(inode=12, size=300, mtime_ns=1), 1.0)   # renamed over (users add|remove)
    assert watch.reload(FileStamp(inode=11, size=301, mtime_ns=1), 1.0)
    assert watch.reload(FileStamp(inode=11, size=300, mtime_ns=2), 1.0)
    assert watch.reload(None, 1.0)                               # deleted
    assert watch.reload(first, 30.0)                             # rewritten in place within one mtime tick?
    watch.read(None, 31.0)
    assert not watch.reload(None, 32.0) and watch.reload(first, 32.0)


ALICE = User("alice", "operator", "scrypt$a")
BOB = User("bob", "viewer", "scrypt$b")
OP1 = User("op-1", "operator", "scrypt$c")


def test_a_new_reading_of_the_users_file_says_what_changed():
    old = {"alice": ALICE, "bob": BOB, "op-1": OP1}
    new = {"alice": User("alice", "operator", "scrypt$new"), "bob": User("bob", "operator", "scrypt$b"),
           "carol": User("carol", "viewer", "scrypt$d")}
    assert changes(old, new) == ["alice has a new password", "bob is now an operator",
                                 "op-1 is no longer in the users file", "carol (viewer) was added"]
    assert changes(old, dict(old)) == []


def test_the_sessions_of_a_removed_or_changed_user_end_and_the_others_stay():
    sessions = Sessions(clock=Clock())
    alice, bob, op1, op1_again = (sessions.open(u) for u in (ALICE, BOB, OP1, OP1))
    ended = sessions.keep_only({"alice": User("alice", "operator", "scrypt$new"), "bob": BOB})
    assert {s.token for s in ended} == {alice.token, op1.token, op1_again.token}
    assert sessions.get(bob.token) is bob and sessions.get(op1.token) is None and sessions.get(alice.token) is None
    ended = sessions.keep_only({"bob": User("bob", "operator", "scrypt$b")})       # a viewer made an operator
    assert [s.token for s in ended] == [bob.token]
    assert sessions.keep_only({}) == [] and len(sessions) == 0


def test_a_users_logins_are_bounded_and_a_new_one_ends_the_oldest():
    clock = Clock()
    sessions = Sessions(clock=clock, per_user=3)
    opened = []
    for _ in range(5):
        clock.now += 1
        opened.append(sessions.open(ALICE))
    bob = sessions.open(BOB)
    assert [sessions.get(s.token) is not None for s in opened] == [False, False, True, True, True]
    assert sessions.get(bob.token) is bob and len(sessions) == 4


def test_a_users_file_that_is_not_text_is_a_users_file_error(tmp_path):
    path = tmp_path / "users"
    path.write_bytes(b"alice:operator:\xff\xfe")
    with pytest.raises(UsersFileError, match="not text"):
        Users.load(path)


# -- how it may be exposed -------------------------------------------------------------------------------

def test_beyond_this_machine_it_needs_logins_and_over_plain_http_the_flag_that_says_the_risk():
    assert refusal(host="127.0.0.1", logins=False, tls=False) is None
    assert refusal(host="::1", logins=True, tls=False) is None                  # loopback: nothing on the wire
    assert "needs logins" in refusal(host="0.0.0.0", logins=False, tls=True)
    why = refusal(host="0.0.0.0", logins=True, tls=False)
    assert "in clear" in why and INSECURE_FLAG in why and "--tls-cert" in why
    assert refusal(host="192.168.1.20", logins=True, tls=True) is None
    assert refusal(host="192.168.1.20", logins=True, tls=False, insecure_http_logins=True) is None
    assert "in clear" in insecure_warning(host="0.0.0.0", logins=True, tls=False)
    assert insecure_warning(host="0.0.0.0", logins=True, tls=True) is None
    assert insecure_warning(host="127.0.0.1", logins=True, tls=False) is None


def test_behind_a_proxy_buttons_need_logins():
    assert buttons_refused(logins=False, server_names=()) is None                # this machine's own users
    assert "logins" in buttons_refused(logins=False, server_names=("dash.farm.lan",))
    assert "proxy" in buttons_refused(logins=False, server_names=(), relayed_request=True)
    assert buttons_refused(logins=True, server_names=("dash.farm.lan",), relayed_request=True) is None


def test_a_relayed_request_is_told_by_its_forwarding_headers():
    assert relayed(["Host", "X-Forwarded-For"]) and relayed(["forwarded"]) and relayed({"X-Real-IP": "1.2.3.4"})
    assert not relayed(["Host", "Content-Type", "Cookie"])


def test_a_trusted_proxy_is_believed_about_its_client_and_no_one_else_is():
    proxy = frozenset({"127.0.0.1"})
    assert client_address("127.0.0.1", {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}, proxy) == "198.51.100.7"
    assert client_address("127.0.0.1", {"X-Real-IP": "198.51.100.8"}, proxy) == "198.51.100.8"
    assert client_address("127.0.0.1", {}, proxy) == "127.0.0.1"
    assert client_address("127.0.0.1", {"X-Forwarded-For": "not an address"}, proxy) == "127.0.0.1"
    assert client_address("192.168.1.31", {"X-Forwarded-For": "198.51.100.7"}, proxy) == "192.168.1.31"
