"""Tier 1: the fleet's pure parts (issue #40): join tokens, the spent-token
store, the registrar's decisions, the broker's password and ACL files, the
embedded broker's CONNECT gate, sealed answers, the documents."""

import pytest

from fogmesh.broker.connect_gate import admit, parse_connect, still_valid
from fogmesh.broker.logins import (
    acl_with_block,
    acl_without_login,
    hash_password,
    parse_acl,
    parse_passwd,
    verify_password,
    with_login,
    within,
    without_login,
)
from fogmesh.broker.secure import Logins, acl_text, role_rules
from fogmesh.deploy.manifest import Signed
from fogmesh.deploy.signing import BoxKey, SigningKey, TrustStore, seal
from fogmesh.enrollment.bootstrap import connect_packet
from fogmesh.enrollment.handover import agent_client_ids
from fogmesh.enrollment.registrar import Again, Mint, Refused, Site, choose_id, decide_join, decide_revoke
from fogmesh.enrollment.registrar import revoke_document as revoke_doc
from fogmesh.enrollment.spent import Spent, SpentTokens, key_hash
from fogmesh.errors import InvalidMessage, JoinRefused
from fogmesh.fleet import FleetView
from fogmesh.identities import IdentityRecord, JoinRequest, NewIdentity, answer_refused, read_answer
from fogmesh.join_token import JoinToken, read_token, sign_token, verify_token
from fogmesh.topics import Topics

NOW = 1_800_000_000.0
KEY = SigningKey.generate()
TRUST = TrustStore([KEY.public])


def token(**kw):
    fields = dict(token_id="tok-1", role="agent", site="farm", expires=int(NOW + 3600),
                  broker="mqtts://gw.lan:8883", join_password="jp", labels=("solar", "cam"), ca_pin="pin")
    return JoinToken(**{**fields, **kw})


def signed(**kw):
    return sign_token(token(**kw), KEY)


# -- tokens --------------------------------------------------------------------------------------
def test_a_signed_token_verifies_and_says_where_to_join():
    t = verify_token(signed(), TRUST, now=NOW)
    assert (t.site, t.labels, t.role, t.broker, t.ca_pin, t.key_id) == \
        ("farm", ("solar", "cam"), "agent", "mqtts://gw.lan:8883", "pin", KEY.public.key_id)
    assert len(signed()) < 500            # small enough for a terminal's QR code


def test_an_expired_token_is_refused_with_the_reason():
    with pytest.raises(JoinRefused, match="expired 2 min ago") as e:
        verify_token(signed(expires=int(NOW - 120)), TRUST, now=NOW)
    assert e.value.code == "expired"


def test_a_token_changed_after_signing_or_signed_by_another_key_is_refused():
    prefix, body, sig = signed().split(".")
    claims = read_token(signed())[0].claims()
    forged = sign_token(token(role="bridge"), KEY).split(".")[1]      # another body, this signature
    with pytest.raises(JoinRefused) as e:
        verify_token(f"{prefix}.{forged}.{sig}", TRUST, now=NOW)
    assert e.value.code == "bad_signature"
    with pytest.raises(JoinRefused) as e:
        verify_token(sign_token(token(), SigningKey.generate()), TRUST, now=NOW)
    assert e.value.code == "unknown_key" and claims["s"] == "farm"


@pytest.mark.parametrize("text", ["", "fmj1.", "fmj1.e30.", "xyz.a.b", "fmj1." + "A" * 3000 + ".b", "fmj1.!!.??"])
def test_garbage_is_no_token(text):
    with pytest.raises(JoinRefused) as e:
        read_token(text)
    assert e.value.code == "bad_token"


def test_a_token_names_a_valid_site_and_labels():
    with pytest.raises(ValueError):
        token(site="a/b")
    with pytest.raises(ValueError):
        token(labels=("x,y",))
    with pytest.raises(ValueError):
        token(role="operator")


# -- the spent-token store ------------------------------------------------------------------------
def spent_entry(tid="tok-1", key=b"k" * 32, expires=NOW + 60):
    return Spent(token_id=tid, expires=int(expires), box_key=key_hash(key), box_id="pi-7", used=NOW,
                 answer="c2VhbGVk", login_hash="$7$...")


def test_a_token_is_spent_once_and_the_same_box_may_ask_again():
    store = SpentTokens()
    assert store.check("tok-1", b"k" * 32).kind == "new"
    store.spend(spent_entry())
    assert store.check("tok-1", b"k" * 32).kind == "again"
    assert store.check("tok-1", b"x" * 32).kind == "used"
    with pytest.raises(ValueError):
        store.spend(spent_entry())
    again = SpentTokens.decode(store.encode())
    assert again.check("tok-1", b"x" * 32).entry == spent_entry()


def test_the_store_forgets_tokens_once_expired_for_an_hour():
    store = SpentTokens()
    store.spend(spent_entry("old", expires=NOW - 4000))
    store.spend(spent_entry("new", expires=NOW - 10))
    assert store.prune(NOW) == 1 and set(store.entries) == {"new"}


# -- the registrar's decisions ---------------------------------------------------------------------
SITE = Site(root="fog/v1", site="farm", ca_pem="CA", trust_lines=(KEY.public.line(),))


def join(text, *, box_key=b"b" * 32, wanted="pi-host", taken=(), spent=None, site=SITE):
    return decide_join(JoinRequest(text, box_key, wanted), trust=TRUST, site=site, spent=spent or SpentTokens(),
                       taken=set(taken), now=NOW, password="pw", salt=b"s" * 12)


def test_a_join_mints_a_login_bound_to_its_own_topics():
    m = join(signed())
    assert isinstance(m, Mint)
    assert (m.identity.box_id, m.identity.login, m.identity.site, m.identity.labels) == \
        ("pi-host", "pi-host", "farm", ("solar", "cam"))
    assert m.identity.ca_pem == "CA" and m.identity.trust_keys == (KEY.public.line(),)
    assert ("write", "fog/v1/presence/pi-host") in m.rules and verify_password(m.hashed, "pw")
    assert m.record.state == "active" and m.record.token == "tok-1"


def test_the_registrar_names_a_revoked_agents_sessions_as_the_agent_does():
    # enrollment/handover.py takes the task session over by its client id (topics.md: fa-{id}-{hash of root})
    from fogmesh.edge_agent.agent import Agent
    from fogmesh.edge_agent.options import AgentOptions
    agent = Agent("pi-7", "mqtt://127.0.0.1:1", AgentOptions(root="farm/x"))
    assert agent_client_ids("pi-7", "farm/x") == (agent.client.client_id, agent.ctl.client_id)
    # ... under its own login, which may read the task topics while it holds it
    assert {("read", "farm/x/tasks"), ("read", "farm/x/tasks/+")} <= set(role_rules("registrar", "registrar",
                                                                                        "farm/x"))


def test_a_spent_token_is_refused_for_another_box_and_answered_again_for_the_same():
    store = SpentTokens()
    store.spend(spent_entry(key=b"b" * 32))
    assert isinstance(join(signed(), spent=store), Again)
    refused = join(signed(), box_key=b"o" * 32, spent=store)
    assert isinstance(refused, Refused) and refused.code == "used" and "pi-7" in refused.message


def test_a_token_for_another_site_or_expired_is_refused():
    assert join(signed(site="barn")).code == "wrong_site"
    assert join(signed(expires=int(NOW - 1))).code == "expired"


def test_ids_are_unique_and_a_bridge_is_bridge_site():
    t = token()
    assert choose_id(t, "Pi-Host.lan", set()) == "pi-host"
    assert choose_id(t, "pi-host", {"pi-host", "pi-host-2"}) == "pi-host-3"
    assert choose_id(t, None, set()) == "agent-tok-1"
    assert choose_id(t, "fleet-join", set()) == "agent-fleet-join"
    assert choose_id(token(role="bridge"), "x", set()) == "bridge-farm"
    assert isinstance(choose_id(token(role="bridge"), "x", {"bridge-farm"}), Refused)
    assert isinstance(choose_id(token(box_id="pi-7"), "x", {"pi-7"}), Refused)


def revoke(box="pi-7", ts=NOW, key=KEY):
    return Signed(revoke_doc(box, ts=ts, request_id="r1")).signed_with(key.sign)


def test_a_revoke_must_be_signed_recent_and_name_a_box():
    records = {"pi-7": IdentityRecord("pi-7", "agent")}
    assert decide_revoke(revoke(), trust=TRUST, now=NOW, records=records, logins=set()) == "pi-7"
    assert decide_revoke(revoke(box="sensor-1"), trust=TRUST, now=NOW, records={}, logins={"sensor-1"}) == "sensor-1"
    assert decide_revoke(revoke(ts=NOW - 3600), trust=TRUST, now=NOW, records=records,
                         logins=set()).code == "stale_request"
    assert decide_revoke(revoke(key=SigningKey.generate()), trust=TRUST, now=NOW, records=records,
                         logins=set()).code == "unknown_key"
    assert decide_revoke(revoke(box="nobody"), trust=TRUST, now=NOW, records=records,
                         logins=set()).code == "unknown_box"
    assert decide_revoke(revoke(box="registrar"), trust=TRUST, now=NOW, records=records,
                         logins={"registrar"}).code == "bad_request"


# -- the broker's files ----------------------------------------------------------------------------
def test_passwords_in_mosquittos_pbkdf2_form_verify_and_change_one_login_at_a_time():
    hashed = hash_password("secret", b"0123456789ab")
    assert hashed.startswith("$7$101$") and verify_password(hashed, "secret") and not verify_password(hashed, "x")
    text = with_login(with_login("", "a", hashed), "b", "$6$x$y")
    assert list(parse_passwd(text)) == ["a", "b"]
    assert parse_passwd(without_login(text, "a")) == {"b": "$6$x$y"}
    with pytest.raises(ValueError):
        with_login(text, "bad:login", hashed)


def test_the_acl_binds_each_login_to_its_own_topics():
    acl = parse_acl(acl_text(Logins(agents=("pi-1", "pi-2"), operators=("ops",), fleet=True)))
    assert acl.allows("pi-1", "c", "fog/v1/presence/pi-1", "write")
    assert not acl.allows("pi-1", "c", "fog/v1/presence/pi-2", "write")
    assert not acl.allows("pi-1", "c", "fog/v1/deploy/reported/pi-2", "write")
    assert acl.allows("pi-1", "c", "fog/v1/presence/pi-2", "read")
    assert acl.allows("fleet-join", "c", "fog/v1/fleet/join/n1", "write")
    assert not acl.allows("fleet-join", "c", "fog/v1/tasks", "write")
    assert not acl.allows(None, "c", "fog/v1/fleet/ca", "read")          # anonymous: nothing
    assert acl.allows_filter("pi-1", "c", "fog/v1/tasks/+")
    assert not acl.allows_filter("pi-1", "c", "fog/v1/#")
    assert acl.allows("ops", "c", "fog/v1/fleet/requests", "write")


def test_a_block_is_added_replaced_and_removed_leaving_the_rest_as_it_was():
    base = acl_text(Logins(agents=("pi-1",), operators=("ops",)))
    added = acl_with_block(base, "pi-7", role_rules("agent", "pi-7"))
    assert added.startswith(base.rstrip("\n")) and "user pi-7\ntopic read fog/v1/tasks" in added
    replaced = acl_with_block(added, "pi-7", [("read", "x")])
    assert replaced.count("user pi-7") == 1 and "topic read x" in replaced
    assert parse_acl(acl_without_login(added, "pi-7")).blocks == parse_acl(base).blocks


def test_deny_wins_and_patterns_name_the_client():
    acl = parse_acl("pattern readwrite own/%u/#\nuser a\ntopic read x/#\ntopic deny x/secret\n")
    assert acl.allows("a", "c", "own/a/1", "write") and not acl.allows("a", "c", "own/b/1", "write")
    assert acl.allows("a", "c", "x/1", "read") and not acl.allows("a", "c", "x/secret", "read")


@pytest.mark.parametrize("inner,outer,inside", [
    ("a/+", "a/#", True), ("a/b", "a/+", True), ("a/#", "a/+", False), ("a/+/c", "a/+/+", True),
    ("a", "a/#", True), ("b/c", "a/#", False), ("$SYS/x", "#", False)])
def test_one_filter_within_another(inner, outer, inside):
    assert within(inner, outer) is inside


def test_the_embedded_broker_admits_only_a_valid_login_whose_will_it_may_publish():
    passwords = {"pi-1": hash_password("pw", b"s" * 12)}
    acl = parse_acl(acl_text(Logins(agents=("pi-1",))))
    c = parse_connect(connect_packet("cid", "pi-1", "pw"))
    assert c is not None and (c.client_id, c.username, c.password) == ("cid", "pi-1", "pw")
    assert admit(c, passwords, acl) is None
    assert "wrong password" in admit(parse_connect(connect_packet("cid", "pi-1", "no")), passwords, acl)
    assert "unknown" in admit(parse_connect(connect_packet("cid", "pi-9", "pw")), passwords, acl)
    assert still_valid("pi-1", "pw", passwords) and not still_valid("pi-1", "pw", {})
    assert parse_connect(b"\x30\x00") is None and parse_connect(b"\x10\x05garb") is None


# -- sealed answers and documents ------------------------------------------------------------------
def test_only_the_box_that_asked_opens_its_answer():
    box = BoxKey.generate()
    identity = NewIdentity("pi-7", "agent", "farm", "pi-7", "pw", "mqtts://gw:8883", ("solar",), ca_pem="CA")
    sealed = seal(box.public, identity.encode())
    assert NewIdentity.decode(BoxKey.from_raw(box.raw()).open(sealed)) == identity
    with pytest.raises(ValueError):
        BoxKey.generate().open(sealed)
    with pytest.raises(ValueError):
        box.open(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    assert b"pw" not in sealed


def test_a_refusal_comes_back_with_its_code_and_a_bad_request_is_refused():
    with pytest.raises(JoinRefused, match="works once") as e:
        read_answer(answer_refused("used", "a token works once"))
    assert e.value.code == "used"
    for bad in (b"{}", b"[1]", b'{"token": "t", "box_key": "short"}', b"x" * 9000):
        with pytest.raises(JoinRefused):
            JoinRequest.decode(bad)
    ok = JoinRequest("t", b"k" * 32, "pi")
    assert JoinRequest.decode(ok.encode()) == ok


def test_an_identity_record_names_only_its_own_box():
    record = IdentityRecord("pi-7", "agent", "farm", ("a",), "revoked", NOW, NOW + 1)
    assert IdentityRecord.decode(record.encode(), box="pi-7") == record
    with pytest.raises(InvalidMessage):
        IdentityRecord.decode(record.encode(), box="pi-8")


def test_the_fleet_view_shows_a_revoked_agent_as_revoked():
    view = FleetView(Topics())
    view.on_message("fog/v1/fleet/identities/pi-7", IdentityRecord("pi-7", "agent", state="revoked",
                                                                   revoked=NOW - 5).encode())
    rows = view.rows(NOW)["agents"]
    assert [(r["agent"], r["state"]) for r in rows] == [("pi-7", "revoked")]
    view.on_message("fog/v1/fleet/identities/pi-7", b"")
    assert view.rows(NOW)["agents"] == []
