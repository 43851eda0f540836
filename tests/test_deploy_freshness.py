"""Tier 1: what an agent admits of the desired states addressed to it, with
the fleet's signed timestamp and a fake clock (``now``), and what
``fogmesh deploy`` checks before it publishes anything. No broker."""

from __future__ import annotations

import pytest

from fogmesh.deploy.desired import BundleRef, Desired
from fogmesh.deploy.freshness import DesiredBook, Timestamp, admit, merge_floors
from fogmesh.deploy.manifest import Signed
from fogmesh.deploy.preflight import check_bundle, check_key, check_target
from fogmesh.deploy.reported import Report
from fogmesh.deploy.signing import SigningKey, TrustStore
from fogmesh.errors import DeployRefused

pytestmark = pytest.mark.timeout(30)

V1 = BundleRef("plantcare", "1.0", "d1", 10, ("plant",))
V2 = BundleRef("plantcare", "1.1", "d2", 10, ("plant",))
OLD = Desired("site:farm", 100, (V1,))
NEW = Desired("site:farm", 200, (V2,))
DAY = 86400.0


def stamp(serial: int = 1, *, issued: float = 1000.0, ttl: float = DAY, **floors: int) -> Timestamp:
    return Timestamp.issue({t.replace("_", ":"): s for t, s in floors.items()} or {"site:farm": 200},
                           serial=serial, now=issued, ttl_s=ttl)


def refusal(doc: Desired, **kw) -> str:
    with pytest.raises(DeployRefused) as info:
        admit(doc, **{"taken": {}, "stamp": None, "now": 1000.0} | kw)
    return info.value.code


# -- admit: the decision -----------------------------------------------------------------
def test_an_agent_with_an_empty_state_refuses_a_document_older_than_the_timestamp_names() -> None:
    """The replay an agent that joins later used to install."""
    assert refusal(OLD, stamp=stamp()) == "stale_serial"


def test_the_floor_holds_even_when_the_timestamp_has_expired_or_the_clock_is_wrong() -> None:
    assert refusal(OLD, stamp=stamp(), now=1000.0 + 30 * DAY) == "stale_serial"
    assert refusal(OLD, stamp=stamp(), now=0.0) == "stale_serial"


def test_the_document_the_timestamp_names_is_taken_and_a_newer_one_too() -> None:
    admit(NEW, taken={}, stamp=stamp(), now=1000.0)
    admit(Desired("site:farm", 300, (V2,)), taken={}, stamp=stamp(), now=1000.0)


def test_a_document_older_than_the_last_taken_is_a_replay_as_before() -> None:
    assert refusal(OLD, taken={"site:farm": 200}, stamp=stamp(site_farm=50)) == "stale_serial"


def test_the_document_taken_last_needs_no_timestamp() -> None:
    """An agent of the previous release upgraded in place keeps what it took."""
    admit(OLD, taken={"site:farm": 100}, stamp=None, now=1000.0)


def test_without_a_timestamp_a_new_document_waits_for_one() -> None:
    assert refusal(NEW) == "no_timestamp"
    assert refusal(NEW, taken={"site:farm": 100}) == "no_timestamp"


def test_a_document_the_timestamp_does_not_name_waits() -> None:
    assert refusal(Desired("label:camera", 300, (V2,)), stamp=stamp()) == "not_in_timestamp"


def test_an_expired_timestamp_makes_a_new_document_wait() -> None:
    s = stamp(issued=1000.0, ttl=60.0)
    admit(NEW, taken={}, stamp=s, now=1059.9)
    assert refusal(NEW, stamp=s, now=1060.0) == "expired_timestamp"


def test_a_timestamp_issued_in_the_boxs_future_means_its_clock_is_behind() -> None:
    """A Pi without a real-time clock that booted at 1970: every timestamp would look valid to it."""
    s = stamp(issued=1_800_000_000.0)
    assert refusal(NEW, stamp=s, now=1000.0) == "clock_behind"
    admit(NEW, taken={}, stamp=s, now=1_800_000_000.0 - 299.0)       # within the skew


def test_refusals_say_what_to_do() -> None:
    with pytest.raises(DeployRefused, match="fogmesh deploy renew"):
        admit(NEW, taken={}, stamp=stamp(ttl=1.0), now=5000.0)
    with pytest.raises(DeployRefused, match="replayed old document"):
        admit(OLD, taken={}, stamp=stamp(), now=1000.0)


# -- the book: documents that wait for a newer timestamp -----------------------------------
def test_a_waiting_document_is_taken_when_a_fresh_timestamp_comes() -> None:
    book = DesiredBook()
    with pytest.raises(DeployRefused):
        book.offer(NEW, now=1000.0)
    assert book.docs == {} and book.waiting == {"site:farm": NEW}
    assert book.restamp(stamp(1), now=1000.0) == [(NEW, None)]
    assert book.docs == {"site:farm": NEW} and book.taken == {"site:farm": 200} and book.waiting == {}


def test_an_expired_timestamp_holds_a_newcomer_until_it_is_renewed() -> None:
    book = DesiredBook()
    book.restamp(stamp(1, issued=1000.0, ttl=60.0), now=2000.0)
    with pytest.raises(DeployRefused, match="expired"):
        book.offer(NEW, now=2000.0)
    (doc, still), = book.restamp(stamp(2, issued=1990.0, ttl=60.0), now=2000.0)
    assert still is None and book.taken == {"site:farm": 200}


def test_a_replayed_document_never_waits_and_never_becomes_current() -> None:
    book = DesiredBook()
    book.restamp(stamp(1), now=1000.0)
    with pytest.raises(DeployRefused, match="serial 100"):
        book.offer(OLD, now=1000.0)
    assert book.waiting == {} and book.docs == {}
    assert book.offer(NEW, now=1000.0) is True
    assert book.offer(NEW, now=1000.0) is False          # the same again: nothing changed


def test_an_older_timestamp_changes_nothing() -> None:
    book = DesiredBook()
    book.restamp(stamp(5, site_farm=200), now=1000.0)
    assert book.restamp(stamp(4, site_farm=100), now=1000.0) == []
    assert book.stamp is not None and book.stamp.serial == 5


def test_a_cleared_document_is_forgotten() -> None:
    book = DesiredBook()
    book.restamp(stamp(1), now=1000.0)
    book.offer(NEW, now=1000.0)
    assert book.forget(["site:farm"]) is True and book.docs == {} and book.taken == {"site:farm": 200}


# -- the document ----------------------------------------------------------------------------
def test_floors_only_grow() -> None:
    assert merge_floors({"all": 5, "site:farm": 9}, {"site:farm": 7, "label:x": 3}) == \
        {"all": 5, "site:farm": 9, "label:x": 3}


def test_a_timestamp_round_trips_and_ignores_fields_it_does_not_know() -> None:
    s = stamp(7, site_farm=200, all=150)
    assert Timestamp.from_dict(s.to_dict()) == s
    assert Timestamp.from_dict({**s.to_dict(), "later_addition": {"x": 1}}) == s
    assert s.expires == s.issued + DAY


@pytest.mark.parametrize("bad", [{}, {"format": "fogmesh-timestamp/2"}, "x",
                                 {"format": "fogmesh-timestamp/1", "serial": 1, "issued": 0, "expires": 1,
                                  "desired": {"site:a/b": 1}}])
def test_a_malformed_timestamp_is_a_bad_document(bad) -> None:
    with pytest.raises(DeployRefused) as info:
        Timestamp.from_dict(bad)
    assert info.value.code == "bad_document"


def test_a_report_says_which_keys_its_agent_trusts_and_an_older_one_says_nothing() -> None:
    r = Report(agent="pi-1", trust=("a066150caceb8831",))
    assert Report.from_dict(r.to_dict()) == r
    assert Report.from_dict({"agent": "pi-1"}).trust == ()


# -- fogmesh deploy's checks before it publishes ------------------------------------------
OPS, STRANGER = SigningKey.generate(), SigningKey.generate()
AGENTS_TRUST = TrustStore([OPS.public], who="the agents trust (--trust-key)")
DOC = Signed({"format": "fogmesh-bundle/1", "name": "plantcare"})


def farm(agent: str, *keys: SigningKey, site: str = "farm") -> Report:
    return Report(agent=agent, site=site, trust=tuple(k.public.key_id for k in keys))


def test_a_bundle_signed_by_a_key_the_agents_trust_passes() -> None:
    assert check_bundle(DOC.signed_with(OPS.sign), AGENTS_TRUST, what="b") == OPS.public.key_id


@pytest.mark.parametrize("signed, code", [(DOC.signed_with(STRANGER.sign), "unknown_key"), (DOC, "unsigned"),
                                          (Signed({**DOC.document, "name": "x"}, DOC.signed_with(OPS.sign).signatures),
                                           "bad_signature")])
def test_a_bundle_the_agents_would_refuse_is_refused_before_anything_is_published(signed, code) -> None:
    with pytest.raises(DeployRefused, match="nothing was published") as info:
        check_bundle(signed, AGENTS_TRUST, what="b")
    assert info.value.code == code


def test_a_signing_key_the_agents_do_not_trust_is_refused() -> None:
    check_key(OPS.public.key_id, AGENTS_TRUST.keys)
    with pytest.raises(DeployRefused, match="rollbacks") as info:
        check_key(STRANGER.public.key_id, AGENTS_TRUST.keys)
    assert info.value.code == "unknown_key"


def test_a_target_no_agent_answers_to_is_refused_unless_waiting_for_agents() -> None:
    seen = [farm("f1", OPS), farm("c1", OPS, site="city")]
    with pytest.raises(DeployRefused, match="--wait-for-agents") as info:
        check_target("site:nosuchsite", seen, key_ids=[OPS.public.key_id], wait_for_agents=False)
    assert info.value.code == "no_agent" and "farm" in str(info.value)
    assert check_target("site:nosuchsite", seen, key_ids=[], wait_for_agents=True) == []
    assert [r.agent for r in check_target("all", seen, key_ids=[], wait_for_agents=False)] == ["c1", "f1"]


def test_agents_that_report_other_keys_are_named_and_older_agents_are_not_judged() -> None:
    seen = [farm("pi-ok", OPS), farm("pi-other", STRANGER), farm("pi-old")]    # pi-old: a report without trust
    with pytest.raises(DeployRefused, match="pi-other \\(trusts") as info:
        check_target("site:farm", seen, key_ids=[OPS.public.key_id], wait_for_agents=False)
    assert info.value.code == "unknown_key" and "pi-ok" not in str(info.value)
    assert len(check_target("site:farm", seen[::2], key_ids=[OPS.public.key_id], wait_for_agents=False)) == 2


# -- the agent's intake: a key trusted for timestamps only ------------------------------------
def test_a_timestamp_key_vouches_for_timestamps_and_signs_nothing_else() -> None:
    import logging

    from fogmesh.deploy.desired import Identity
    from fogmesh.deploy.intake import Intake
    from fogmesh.mqtt import Message
    from fogmesh.topics import Topics

    renewer = SigningKey.generate()
    topics = Topics("fog/v1")
    book = DesiredBook()
    intake = Intake(me=Identity("pi-1", "farm"), topics=topics, trust=TrustStore([OPS.public]),
                    stamp_trust=TrustStore([OPS.public, renewer.public]), book=book, wall_clock=lambda: 1000.0,
                    log=logging.getLogger("test"))

    def message(topic: str, document: dict, key: SigningKey) -> Message:
        return Message(topic, Signed(document).signed_with(key.sign).encode(), 1, True, 0, 0)

    desired = topics.deploy_desired("site:farm")
    changed, refusals = intake.take(message(desired, NEW.to_dict(), renewer))
    assert (changed, [e.code for e, _ in refusals]) == (False, ["unknown_key"])
    changed, refusals = intake.take(message(desired, NEW.to_dict(), OPS))
    assert not changed and [(e.code, serial) for e, serial in refusals] == [("no_timestamp", 0)]   # waits
    changed, refusals = intake.take(message(topics.deploy_timestamp, stamp(1).to_dict(), renewer))
    assert changed and refusals == [] and book.taken == {"site:farm": 200}
    assert intake.take(message(desired, OLD.to_dict(), OPS))[1][0][0].code == "stale_serial"


# -- fogmesh deploy status: an agent behind what the operator published ------------------------
def test_deploy_status_flags_an_agent_that_runs_an_older_serial_than_the_history_names() -> None:
    """An old timestamp and an old desired state replayed together, within
    the old timestamp's lifetime, make a newcomer install the old release
    (topics.md, Limits): every retained document then looks current, but the
    history still names the newer push, so ``status`` says "replayed?"."""
    import orjson

    from fogmesh.announcements import Presence
    from fogmesh.deploy.commands import status
    from fogmesh.deploy.operator import Operator
    from fogmesh.mqtt import Message

    op = Operator("mqtt://127.0.0.1:1", root="fog/v1", key=OPS, wall_clock=lambda: 2.0)
    op.watch = lambda **_: None                          # type: ignore[method-assign]
    t = op.topics

    def feed(topic: str, payload: bytes) -> None:
        op._on_message(Message(topic, payload, 1, True, 0, 0))

    def signed(document: dict) -> bytes:
        return Signed(document).signed_with(OPS.sign).encode()

    def entry(serial: int, action: str = "deploy", **more: object) -> bytes:
        return orjson.dumps({"serial": serial, "target": "site:farm", "action": action, "at": 1.0,
                             "bundles": [V2.to_dict()], "previous": [], **more})

    feed(t.deploy_timestamp, signed(stamp(1, site_farm=100).to_dict()))      # replayed: names 100
    feed(t.deploy_desired("site:farm"), signed(OLD.to_dict()))              # replayed: serial 100
    for serial, more in ((100, {}), (200, {}), (300, {"action": "canary", "canaries": ["c1"]})):
        feed(t.deploy_history(serial), entry(serial, **more))   # type: ignore[arg-type]
    for agent, applied in (("f1", 200), ("n1", 100), ("c1", 300), ("gone", 100)):
        feed(t.deploy_reported(agent), orjson.dumps(Report(agent=agent, site="farm", state="running",
                                                           desired_serial=applied, applied_serial=applied).to_dict()))
        feed(t.presence(agent), orjson.dumps(Presence(agent=agent, state="offline" if agent == "gone" else "online",
                                                      ts=1.0).to_dict()))
    said: list[str] = []
    out = status(op, None, said.append)
    rows = {line.split()[0]: line for line in said if line.split()[0] in ("f1", "n1", "c1", "gone")}
    assert "replayed?" in rows["n1"] and "serial 200" in rows["n1"], rows["n1"]
    assert not any("replayed?" in rows[a] for a in ("f1", "c1", "gone")), rows    # up to date, a canary, offline
    assert out["behind"] == {"n1": {"site:farm": 200}}
