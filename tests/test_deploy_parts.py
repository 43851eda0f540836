"""Tier 1: fleet deployment's parts without a broker: bundles, signatures,
desired state, chunk fetching and the canary rollout (fake clocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogmesh.bench.wheels import plant_wheels
from fogmesh.deploy.bundle_file import Bundle, build_bundle
from fogmesh.deploy.compat import check_runs_here, is_older
from fogmesh.deploy.desired import (
    Applied,
    BundleRef,
    Change,
    Desired,
    Identity,
    changes,
    check_downgrade,
    check_serial,
    effective,
    parse_target,
)
from fogmesh.deploy.fetching import ChunkFetch
from fogmesh.deploy.manifest import KindSpec, Manifest, Signed
from fogmesh.deploy.operator import next_serial
from fogmesh.deploy.reported import Report, count_fleet
from fogmesh.deploy.rollout import choose_canaries, judge_canaries
from fogmesh.deploy.signing import PublicKey, SigningKey, TrustStore
from fogmesh.errors import DeployRefused

pytestmark = pytest.mark.timeout(30)

KEY = SigningKey.generate()
OTHER = SigningKey.generate()


def no_probe(wheels):
    return {"plant": KindSpec(weight="light", timeout_s=5.0)}


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    b = build_bundle(plant_wheels(tmp_path / "w", "1.0"), probe=no_probe, chunk_size=512,
                     health={"plant": {"moisture": 1}}, clock=lambda: 1.0)
    return Bundle(b.signed.signed_with(KEY.sign), b.payload)


def refused(code: str) -> _Refused:
    return _Refused(code)


class _Refused:
    def __init__(self, code: str) -> None:
        self.code = code

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        assert isinstance(exc, DeployRefused), f"expected a refusal {self.code}, got {exc!r}"
        assert exc.code == self.code, f"expected {self.code}, got {exc.code}: {exc}"
        return True


# -- bundles ---------------------------------------------------------------------
def test_a_bundle_names_its_package_kinds_and_every_chunk(bundle: Bundle) -> None:
    m = bundle.manifest
    assert (m.name, m.version, set(m.kinds)) == ("plantcare", "1.0", {"plant"})
    assert m.kinds["plant"].health_args == {"moisture": 1}
    assert [w.file for w in m.wheels] == ["plantcare-1.0-py3-none-any.whl", "plantdep-1.0-py3-none-any.whl"]
    assert len(m.chunks) == -(-m.payload_size // 512)


def test_a_bundle_file_reads_back_as_written(bundle: Bundle, tmp_path: Path) -> None:
    again = Bundle.read(bundle.write(tmp_path / "b.fogbundle"))
    assert again.manifest == bundle.manifest and again.payload == bundle.payload


def test_a_changed_byte_in_the_payload_is_a_digest_mismatch(bundle: Bundle, tmp_path: Path) -> None:
    path = bundle.write(tmp_path / "b.fogbundle")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with refused("digest_mismatch"):
        Bundle.read(path)


def test_build_refuses_wheels_of_which_none_registers_a_kind(tmp_path: Path) -> None:
    dep = plant_wheels(tmp_path, "1.0")[1]
    with refused("bad_bundle"):
        build_bundle([dep], probe=no_probe)


def test_health_args_for_a_kind_the_bundle_lacks_are_refused_at_build(tmp_path: Path) -> None:
    with refused("bad_bundle"):
        build_bundle(plant_wheels(tmp_path, "1.0"), probe=no_probe, health={"water": {}})


def test_a_manifest_whose_wheels_do_not_tile_the_payload_is_refused(bundle: Bundle) -> None:
    d = bundle.manifest.to_dict()
    d["wheels"][1]["offset"] += 1
    with refused("bad_bundle"):
        Manifest.from_dict(d)


# -- signatures --------------------------------------------------------------------
def test_a_signature_by_a_trusted_key_verifies(bundle: Bundle) -> None:
    assert bundle.signed.verified(TrustStore([KEY.public]), what="b") == KEY.public.key_id


def test_one_of_several_trusted_keys_is_enough_for_rotation(bundle: Bundle) -> None:
    assert bundle.signed.verified(TrustStore([OTHER.public, KEY.public]), what="b") == KEY.public.key_id


def test_a_signature_by_an_unknown_key_is_refused(bundle: Bundle) -> None:
    with refused("unknown_key"):
        bundle.signed.verified(TrustStore([OTHER.public]), what="b")


def test_a_document_changed_after_signing_is_a_bad_signature(bundle: Bundle) -> None:
    changed = Signed({**bundle.signed.document, "version": "9.9"}, bundle.signed.signatures)
    with refused("bad_signature"):
        changed.verified(TrustStore([KEY.public]), what="b")


def test_an_unsigned_document_is_refused(bundle: Bundle) -> None:
    with refused("unsigned"):
        Signed(bundle.signed.document).verified(TrustStore([KEY.public]), what="b")


def test_an_agent_without_trust_keys_takes_nothing(bundle: Bundle) -> None:
    with refused("no_trust_key"):
        bundle.signed.verified(TrustStore(), what="b")


def test_a_public_key_line_round_trips_and_a_file_is_read(tmp_path: Path) -> None:
    key = SigningKey.generate()
    pub = key.save(tmp_path / "k")
    assert PublicKey.parse(str(pub)) == key.public == PublicKey.parse(key.public.line())
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"
    assert SigningKey.load(tmp_path / "k").public == key.public


# -- compatibility -----------------------------------------------------------------
def test_a_wheel_for_another_platform_is_incompatible() -> None:
    with refused("incompatible"):
        check_runs_here("x", [("x-1-cp27-cp27m-win32.whl", ("cp27-cp27m-win32",), None)], None)


def test_a_newer_python_than_this_one_is_incompatible() -> None:
    with refused("incompatible"):
        check_runs_here("x", [("x-1-py3-none-any.whl", ("py3-none-any",), None)], ">=4")


def test_pure_python_wheels_run_here() -> None:
    check_runs_here("x", [("x-1-py3-none-any.whl", ("py3-none-any",), ">=3.8")], ">=3.8")


def test_versions_compare_by_pep_440() -> None:
    assert is_older("1.9", "1.10") and not is_older("1.10", "1.9") and is_older("1.0rc1", "1.0")


# -- desired state -------------------------------------------------------------------
ME = Identity("pi-1", "farm", frozenset({"camera"}))
V1 = BundleRef("plantcare", "1.0", "d1", 10, ("plant",))
V2 = BundleRef("plantcare", "2.0", "d2", 10, ("plant",))


def test_targets_are_checked() -> None:
    assert parse_target("site:farm") == "site:farm" and parse_target("all") == "all"
    for bad in ("farm", "site:", "room:1", "site:a/b", "agent:+"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_an_agent_takes_the_documents_of_its_id_site_labels_and_all() -> None:
    assert [t for t in ("agent:pi-1", "site:farm", "label:camera", "all", "agent:pi-2", "site:city", "label:x")
            if ME.matches(t)] == ["agent:pi-1", "site:farm", "label:camera", "all"]


def test_per_bundle_name_the_newest_serial_wins() -> None:
    docs = [Desired("site:farm", 5, (V2,)), Desired("agent:pi-1", 3, (V1,)), Desired("site:city", 9, (V1,))]
    wanted = effective(docs, ME)
    assert wanted.refs["plantcare"][0] == V2 and wanted.serial == 5


def test_an_absent_entry_removes_what_runs() -> None:
    wanted = effective([Desired("site:farm", 5, (BundleRef("plantcare"),))], ME)
    applied = {"plantcare": Applied("plantcare", "1.0", "d1", 3)}
    assert changes(wanted, applied) == [Change("plantcare", BundleRef("plantcare"), 5, False)]
    assert changes(wanted, {}) == []


def test_what_already_runs_needs_no_change() -> None:
    wanted = effective([Desired("site:farm", 5, (V1,))], ME)
    assert changes(wanted, {"plantcare": Applied("plantcare", "1.0", "d1", 5)}) == []


def test_a_document_older_than_the_last_taken_for_its_target_is_a_replay() -> None:
    check_serial(Desired("site:farm", 5, (V1,)), {"site:farm": 5})
    with refused("stale_serial"):
        check_serial(Desired("site:farm", 4, (V1,)), {"site:farm": 5})


def test_an_older_version_is_refused_unless_the_document_is_a_rollback() -> None:
    applied = {"plantcare": Applied("plantcare", "2.0", "d2", 5)}
    with refused("downgrade"):
        check_downgrade(Change("plantcare", V1, 6, False), applied)
    check_downgrade(Change("plantcare", V1, 6, True), applied)


def test_documents_round_trip() -> None:
    doc = Desired("label:camera", 7, (V1, BundleRef("old")), rollback=True, issued=1.5, note="n")
    assert Desired.from_dict(doc.to_dict()) == doc
    assert next_serial([7, 3], now_ms=5) == 8 and next_serial([], now_ms=5) == 5


# -- fetching chunks (fake clock) ----------------------------------------------------
def test_a_download_asks_for_a_window_of_chunks_lowest_first() -> None:
    f = ChunkFetch.resuming(20, set(), 0.0, window=4)
    assert f.to_ask() == [0, 1, 2, 3] and f.to_ask() == []
    f.got(1, ok=True, now=1.0)
    assert f.to_ask() == [4]


def test_a_resumed_download_asks_only_for_what_it_lacks() -> None:
    f = ChunkFetch.resuming(6, {0, 1, 2, 4}, 0.0, window=8)
    assert f.to_ask() == [3, 5] and f.progress == pytest.approx(4 / 6)


def test_a_chunk_with_a_wrong_digest_is_not_taken_and_three_make_the_bundle_corrupt() -> None:
    f = ChunkFetch.resuming(3, set(), 0.0, window=8)
    f.to_ask()
    assert not f.got(0, ok=False, now=1.0) and f.corrupt() is None and 0 in f.missing
    f.got(0, ok=False, now=1.0)
    f.got(0, ok=False, now=1.0)
    assert f.corrupt() == 0


def test_a_stalled_download_asks_again_then_gives_up() -> None:
    f = ChunkFetch.resuming(3, set(), 0.0, window=2, stall_s=10.0, give_up_s=60.0)
    f.to_ask()
    assert not f.stalled(9.0) and f.stalled(10.0)
    assert f.again(10.0) == [0, 1] and not f.stalled(15.0)
    assert not f.given_up(59.0) and f.given_up(60.0)


def test_a_chunk_that_arrives_twice_counts_once() -> None:
    f = ChunkFetch.resuming(2, set(), 0.0)
    f.to_ask()
    assert f.got(0, ok=True, now=1.0) and not f.got(0, ok=True, now=2.0)
    assert f.progress == 0.5


# -- reports and the rollout (fake clock) ---------------------------------------------
def report(agent: str, *, state: str = "running", desired: int = 0, applied: int = 0, site: str = "farm",
           reason: str | None = None) -> Report:
    return Report(agent=agent, site=site, state=state, desired_serial=desired, applied_serial=applied,
                  reason=reason)


def test_fleet_counters_count_only_the_target() -> None:
    reports = [report("a", applied=9, desired=9), report("b", state="refused", desired=9, applied=5, reason="x"),
               report("c", state="downloading", desired=9, applied=5), report("d", site="city", applied=9)]
    c = count_fleet(reports, target="site:farm", serial=9)
    assert (c.targeted, c.applied, c.succeeded, c.failed, c.in_progress) == (3, 1, 1, 1, 1)


def test_canaries_are_the_first_agents_by_id() -> None:
    assert choose_canaries(["c", "a", "b"], 2) == ["a", "b"]


def judge(reports, now, **kw):
    opts = {"serial": 9, "started": 0.0, "soak_s": 10.0, "deadline_s": 60.0, "max_failures_pct": 0.0} | kw
    return judge_canaries(reports, now=now, **opts)


def test_the_rollout_waits_while_a_canary_works() -> None:
    assert judge({"a": report("a", state="downloading", desired=9)}, 5.0).action == "wait"


def test_the_rollout_soaks_before_it_proceeds() -> None:
    ok = {"a": report("a", desired=9, applied=9)}
    assert judge(ok, 5.0).action == "wait" and judge(ok, 10.0).action == "proceed"


def test_a_failed_canary_rolls_the_rollout_back_at_once() -> None:
    v = judge({"a": report("a", state="rolled_back", desired=9, applied=5, reason="health_check_failed")}, 1.0)
    assert v.action == "roll_back" and "health_check_failed" in v.why


def test_a_silent_canary_counts_as_failed_at_the_deadline() -> None:
    assert judge({"a": None}, 59.0).action == "wait" and judge({"a": None}, 60.0).action == "roll_back"


def test_failures_under_the_threshold_proceed() -> None:
    reports = {"a": report("a", desired=9, applied=9), "b": report("b", desired=9, applied=9),
               "c": report("c", state="refused", desired=9, reason="incompatible")}
    assert judge(reports, 20.0, max_failures_pct=50.0).action == "proceed"
    assert judge(reports, 20.0, max_failures_pct=30.0).action == "roll_back"


def test_a_desired_state_whose_serial_no_json_reader_keeps_exact_is_refused():
    """#37 re-audit: a forged document with serial 2**53 + 1 pushed the
    serial `fogmesh deploy` signs past what every tool reads exactly."""
    import pytest

    from fogmesh.deploy.desired import MAX_SERIAL, Desired
    from fogmesh.errors import DeployRefused
    doc = {"format": "fogmesh-desired/1", "target": "site:farm", "bundles": []}
    assert Desired.from_dict({**doc, "serial": MAX_SERIAL}).serial == MAX_SERIAL
    for bad in (MAX_SERIAL + 1, -1, 1.5, True, "7"):
        with pytest.raises(DeployRefused, match="serial"):
            Desired.from_dict({**doc, "serial": bad})
