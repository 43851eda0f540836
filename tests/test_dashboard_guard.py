"""The dashboard's gatekeeping, pure (fake clocks, no sockets): names it
serves, logins and their sessions, the audit of presses. Failed logins and
the other limits: tests/test_dashboard_limits.py."""

from __future__ import annotations

import os
import stat

import pytest

from fogmesh.dashboard.auth import Users, UsersFileError, check_password, hash_password
from fogmesh.dashboard.guard import host_allowed, host_of, is_loopback, same_origin, served_names
from fogmesh.dashboard.presses import Presses
from fogmesh.dashboard.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the names it serves -----------------------------------------------------------------

def test_a_loopback_dashboard_answers_to_loopback_names_only():
    names = served_names("127.0.0.1")
    assert host_allowed("127.0.0.1:8080", names) and host_allowed("localhost:8080", names)
    assert host_allowed("[::1]:8080", names)
    assert not host_allowed("evil.example:8080", names)       # a rebinding page's own name
    assert not host_allowed(None, names) and not host_allowed("", names)


def test_a_wildcard_dashboard_answers_to_this_machines_addresses_and_name_and_the_server_names():
    names = served_names("0.0.0.0", ["Dash.Farm.LAN."], addresses=["192.168.1.20", "fe80::1"], hostname="pi-7")
    for ok in ("192.168.1.20:8080", "[fe80::1]:8080", "pi-7", "pi-7.local:8080", "dash.farm.lan", "DASH.farm.lan:443"):
        assert host_allowed(ok, names), ok
    for bad in ("192.168.1.21:8080", "evil.example", "pi-7.evil.example", "192.168.1.20.nip.io"):
        assert not host_allowed(bad, names), bad


def test_a_malformed_host_header_is_no_host():
    assert host_of("[::1") is None and host_of("a:b") is None and host_of("[::1]x") is None
    assert host_of("Example.COM.:80") == "example.com"


def test_a_change_from_another_origin_is_refused_and_one_without_an_origin_is_not_a_browsers():
    assert same_origin(None, "127.0.0.1:8080", tls=False)
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080", tls=False)
    assert not same_origin("http://evil.example:8080", "127.0.0.1:8080", tls=False)
    assert not same_origin("http://127.0.0.1:8080", "127.0.0.1:8080", tls=True)      # scheme too


def test_loopback_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("pi.lan")


# -- users ---------------------------------------------------------------------------------

def test_a_password_checks_against_its_hash_and_nothing_else():
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert check_password("correct horse", stored)
    assert not check_password("correct hors", stored) and not check_password("correct horse", "garbage")


def test_the_users_file_is_written_for_its_owner_only_and_read_back(tmp_path):
    path = tmp_path / "conf" / "dashboard-users"
    Users.load(path).with_user("alice", "operator", "s3cret-pass").with_user("bob", "viewer", "an0ther-pw").save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    users = Users.load(path)
    assert users.verify("alice", "s3cret-pass").role == "operator"
    assert users.verify("bob", "an0ther-pw").role == "viewer"
    assert users.verify("alice", "an0ther-pw") is None and users.verify("carol", "s3cret-pass") is None
    Users.load(path).without_user("bob").save()
    assert list(Users.load(path).users) == ["alice"]


@pytest.mark.parametrize("name,role,password", [("al ice", "operator", "longenough"), ("alice", "admin", "longenough"),
                                                ("alice", "viewer", "short")])
def test_a_bad_name_role_or_password_is_refused_with_the_rule(tmp_path, name, role, password):
    with pytest.raises(UsersFileError):
        Users.load(tmp_path / "u").with_user(name, role, password)


def test_a_damaged_users_file_says_which_line(tmp_path):
    path = tmp_path / "u"
    path.write_text("alice:operator:scrypt$x\nbob:root:scrypt$y\n")
    with pytest.raises(UsersFileError, match="line 2"):
        Users.load(path)


# -- sessions ----------------------------------------------------------------------------------

def test_a_session_lasts_while_used_and_ends_when_idle_or_too_old_or_closed():
    clock = Clock()
    sessions = Sessions(clock=clock, idle_s=100, max_s=250)
    alice = Users({}).with_user("alice", "operator", "long-password").users["alice"]
    s = sessions.open(alice)
    clock.now += 90
    assert sessions.get(s.token) is s                # used: the idle clock starts again
    clock.now += 90
    assert sessions.get(s.token) is s
    clock.now += 90                                  # 270 s old
    assert sessions.get(s.token) is None
    t = sessions.open(alice)
    clock.now += 101
    assert sessions.get(t.token) is None
    u = sessions.open(alice)
    sessions.close(u.token)
    assert sessions.get(u.token) is None and sessions.get("forged") is None and sessions.get(None) is None


# -- the audit of presses ----------------------------------------------------------------------

def press(p: Presses, now: float, actuator: str = "lamp", cid: str = "dashboard-1") -> None:
    p.pressed(who="alice", role="operator", address="10.0.0.9", device="relay", actuator=actuator,
              command={"op": "on", "id": cid}, wall=1_800_000_000.0, now=now)


def test_a_press_is_settled_by_the_actuators_next_state():
    p = Presses()
    press(p, 0.0)
    assert p.on_state("relay", "pump", "on") == []                        # another actuator
    (record,) = p.on_state("relay", "lamp", "on")
    assert record["who"] == "alice" and record["command"]["op"] == "on"
    assert record["result"] == {"status": "done", "state": "on"} and len(p) == 0


def test_a_press_the_device_refuses_is_settled_by_its_dead_letter():
    p = Presses()
    press(p, 0.0, cid="dashboard-7")
    (record,) = p.on_dead_letter("dashboard-7", "unknown_actuator", "no lamp here")
    assert record["result"]["status"] == "error" and record["result"]["code"] == "unknown_actuator"


def test_a_press_with_no_answer_in_time_is_recorded_as_such():
    p = Presses(answer_within_s=5.0)
    press(p, 0.0)
    assert p.due(4.9) == []
    (record,) = p.due(5.0)
    assert record["result"]["status"] == "no answer"
