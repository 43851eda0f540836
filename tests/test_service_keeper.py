"""The agent's keeper of its container kinds' containers, on a fake engine
and a fake clock (no podman, milliseconds): a service stopped after
``--service-idle`` and never under a running task (workers share it through
lock files), what an agent killed outright left removed when it starts
again, everything removed when it stops, the service of a kind that is gone
stopped at once. The same on podman: tests/test_containers.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fogmesh.container_fake import FakeClock, FakeEngine, Reply
from fogmesh.container_services import service_kind
from fogmesh.containers import image_kind
from fogmesh.registry import Registry
from fogmesh.service_keeper import ServiceKeeper
from fogmesh.service_lifecycle import idle_due
from tests.test_container_core import AGENT, SERVICE_IMAGE, TASK_IMAGE, serve_sum


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> FakeEngine:
    return FakeEngine(clock)


def keeper_of(*kinds: Any, clock: FakeClock, idle_s: float = 60.0) -> ServiceKeeper:
    # every_s: the test ticks the keeper itself, on the fake clock
    return ServiceKeeper(Registry().with_kinds(*kinds), idle_s=idle_s, every_s=3600, clock=clock.time)


def test_an_idle_service_is_stopped_after_service_idle_and_the_next_task_starts_it_again(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum)
    kind = service_kind("ssum", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=tmp_path, clock=clock)
    keeper = keeper_of(kind, clock=clock, idle_s=60)
    keeper.start()
    try:
        assert kind.handler({"values": [1]}) == 1
        clock.advance(59.9)
        assert keeper.tick() == [] and kind.handler.name in engine.running()
        clock.advance(0.1)
        assert keeper.tick() == [kind.handler] and engine.running() == []
        assert keeper.tick() == [] and engine.count("remove", kind.handler.name) == 1   # once: nothing to stop
        assert kind.handler({"values": [2]}) == 2 and engine.count("start", kind.handler.name) == 2
    finally:
        keeper.stop()


def test_workers_share_one_service_and_it_is_never_stopped_under_a_running_task(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    kind = service_kind("ssum", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=tmp_path, clock=clock)
    handler = kind.handler
    keeper = keeper_of(kind, clock=clock, idle_s=60)
    other_worker = dataclasses.replace(handler)
    seen: list[Any] = []

    def behaviour(args: dict[str, Any]) -> Reply:
        if args.get("outer"):
            clock.advance(120)                               # a long task: the service looks idle...
            seen.append(keeper.tick())                       # ...and is not stopped under it
            seen.append(other_worker({"values": [7]}))       # another worker's task, served meanwhile
        return serve_sum(args)

    engine.add_image(SERVICE_IMAGE, service=behaviour)
    assert handler({"outer": 1, "values": [1]}) == 1
    assert seen == [[], 7]
    assert engine.count("start", handler.name) == 1 and engine.containers[handler.name].tasks == 2
    assert keeper.tick() == []                  # the other worker's task began at that moment: not idle yet
    clock.advance(60)
    assert keeper.tick() == [handler] and engine.running() == []      # no task runs: now it is stopped


def test_the_agents_stop_removes_its_services_and_its_per_task_containers(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum)
    kind = service_kind("ssum", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=tmp_path, clock=clock)
    keeper = keeper_of(kind, image_kind("csum", TASK_IMAGE, engine=engine, owner=AGENT), clock=clock)
    keeper.start()
    assert kind.handler({"values": [1]}) == 1
    engine.leave("fogmesh-task-1", labels={"fogmesh.task-of": AGENT})      # its run died with a stopped worker
    engine.leave("fogmesh-task-2", labels={"fogmesh.task-of": "another-agent"})
    keeper.stop()
    assert engine.running() == ["fogmesh-task-2"]


def test_what_an_agent_killed_outright_left_is_removed_when_it_starts_again(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    kind = service_kind("ssum", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=tmp_path, clock=clock)
    handler = kind.handler
    engine.leave(handler.name, labels={"fogmesh.service-of": AGENT})
    (Path(handler.directory) / "used").touch()                             # its stamp of use, from before
    engine.leave("fogmesh-task-1", labels={"fogmesh.task-of": AGENT})
    engine.leave("fogmesh-task-2", labels={"fogmesh.task-of": "another-agent"})
    keeper = keeper_of(kind, image_kind("csum", TASK_IMAGE, engine=engine, owner=AGENT), clock=clock)
    keeper.start()
    try:
        assert engine.running() == ["fogmesh-task-2"]
        clock.advance(3600)
        assert keeper.tick() == []                                         # nothing left to stop
    finally:
        keeper.stop()


def test_a_kind_that_is_gone_has_its_service_stopped_at_once(engine: FakeEngine, clock: FakeClock,
                                                             tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum)
    old = service_kind("ssum", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=tmp_path, clock=clock,
                       instance="v1")
    new = service_kind("ssum", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=tmp_path, clock=clock,
                       instance="v2")
    keeper = keeper_of(old, clock=clock)
    keeper.start()
    try:
        assert old.handler({"values": [1]}) == 1 and new.handler({"values": [1]}) == 1
        keeper.track(Registry().with_kinds(new))
        assert engine.running() == [new.handler.name]
    finally:
        keeper.stop()


class UnremovableEngine(FakeEngine):
    broken = False

    def remove(self, *names: str, grace_s: int = 2) -> None:
        if self.broken:
            raise RuntimeError("the engine hangs up")
        super().remove(*names, grace_s=grace_s)


def test_one_service_the_keeper_cannot_stop_does_not_end_its_watch_of_the_others(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    broken = UnremovableEngine(clock)
    broken.add_image(SERVICE_IMAGE, service=serve_sum)
    engine.add_image(SERVICE_IMAGE, service=serve_sum)
    first = service_kind("bad", SERVICE_IMAGE, engine=broken, agent=AGENT, state_dir=tmp_path, clock=clock)
    second = service_kind("good", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=tmp_path, clock=clock)
    keeper = keeper_of(first, second, clock=clock)
    assert first.handler({"values": [1]}) == 1 and second.handler({"values": [1]}) == 1
    broken.broken = True
    clock.advance(60)
    assert keeper.tick() == [second.handler]


def test_a_service_is_idle_once_its_last_task_began_service_idle_ago() -> None:
    assert not idle_due(used_at=None, now=1e9, idle_s=60)                  # not used since it was removed
    assert not idle_due(used_at=100.0, now=159.9, idle_s=60)
    assert idle_due(used_at=100.0, now=160.0, idle_s=60)
