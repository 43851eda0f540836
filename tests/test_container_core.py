"""Container kinds' decisions on a fake engine and a fake clock: no podman,
milliseconds. What a task gets from its container however the container
ends, when a service container starts or is removed, and what its tasks get
when it fails (when the agent stops one: tests/test_service_keeper.py); the
same kinds on the real engine: tests/test_containers.py.

The fake (fogmesh.container_fake) keeps containers in memory; each test
scripts what they do with a task. A service's behaviour runs while the
handler waits for its answer, so a test steps there whatever happens
"meanwhile" (another worker's task, the keeper's idle tick) without threads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fogmesh.container_engine import ContainerState, parse_state
from fogmesh.container_exits import meaning, signal_name
from fogmesh.container_fake import Crash, Exit, FakeClock, FakeEngine, Hang, Reply, answer, oom, prints, refuse
from fogmesh.container_protocol import MAX_REPLY, ReplyReader, encode_request
from fogmesh.container_services import ServiceHandler, service_kind
from fogmesh.containers import ImageHandler, image_kind
from fogmesh.errors import BadArgs, ContainerError
from fogmesh.service_lifecycle import Start, StartWait

TASK_IMAGE = "localhost/csum:1"
SERVICE_IMAGE = "localhost/ssum:1"
AGENT = "a1"
RLIMITS = ("Error: runc: runc create failed: unable to start container process: error during container init: "
           "error setting rlimits for ready process: error setting rlimit type 7: operation not permitted")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> FakeEngine:
    return FakeEngine(clock)


def per_task(engine: FakeEngine, **options: Any) -> ImageHandler:
    handler = image_kind("csum", TASK_IMAGE, engine=engine, owner=AGENT, **options).handler
    assert isinstance(handler, ImageHandler)
    return handler


def serve_sum(args: dict[str, Any]) -> Reply:
    if "values" not in args:
        return refuse("values missing")
    return answer(sum(args["values"]))


def service(engine: FakeEngine, clock: FakeClock, state_dir: Path, **options: Any) -> ServiceHandler:
    handler = service_kind("ssum", SERVICE_IMAGE, engine=engine, agent=AGENT, state_dir=state_dir, clock=clock,
                           timeout_s=3, **options).handler
    assert isinstance(handler, ServiceHandler)
    return handler


def failure(call: Any, *args: Any) -> str:
    """The ContainerError ``call(*args)`` raises, in words."""
    with pytest.raises(ContainerError) as caught:
        call(*args)
    return str(caught.value)


# -- a container per task ---------------------------------------------------------------------

def test_a_task_runs_in_a_fresh_container_of_its_own_args_in_and_result_out(engine: FakeEngine) -> None:
    engine.add_image(TASK_IMAGE, task=lambda args: prints({"sum": sum(args["values"])}))
    handler = per_task(engine)
    assert handler({"values": [1, 2, 3]}) == {"sum": 6}
    assert handler({"values": [4]}) == {"sum": 4}
    runs = [name for event, name in engine.events if event == "run"]
    assert len(runs) == 2 and runs[0] != runs[1]
    assert engine.containers == {}                                    # --rm: nothing left


@pytest.mark.parametrize("ends, says", [
    (Exit(3, stderr="Traceback (most recent call last):\nValueError: boom\n"), "exited with 3: ValueError: boom"),
    (Exit(139), "exited with 139 (killed by SIGSEGV)"),
    (Exit(137), "exited with 137 (killed by SIGKILL)"),               # no memory limit: not called an OOM
    (Exit(0, b"not json\n"), "printed no JSON on stdout: b'not json\\n'"),
    (Exit(0, b"[" * 100_000), "printed no JSON"),                      # nested past what json reads
])
def test_a_container_that_fails_gives_its_task_a_clear_error(engine: FakeEngine, ends: Exit, says: str) -> None:
    engine.add_image(TASK_IMAGE, task=lambda args: ends)
    assert says in failure(per_task(engine), {})


def test_exit_status_2_means_the_kind_refused_the_args(engine: FakeEngine) -> None:
    engine.add_image(TASK_IMAGE, task=lambda args: Exit(2, stderr="values missing\n"))
    with pytest.raises(BadArgs, match="values missing"):
        per_task(engine)({})


def test_a_container_killed_over_its_memory_limit_says_out_of_memory_and_the_limit(engine: FakeEngine) -> None:
    engine.add_image(TASK_IMAGE, task=lambda args: oom())
    said = failure(per_task(engine, memory="64m"), {})
    assert "out of memory? the kind's limit is 64m" in said, said


def test_a_container_that_hangs_is_killed_at_the_kinds_timeout(engine: FakeEngine, clock: FakeClock) -> None:
    engine.add_image(TASK_IMAGE, task=lambda args: Hang())
    began = clock.now
    assert "did not answer within 2 s; killed" in failure(per_task(engine, timeout_s=2), {})
    assert clock.now == began + 2 and engine.running() == []


def test_a_container_the_engine_cannot_start_says_why_and_what_to_set(engine: FakeEngine) -> None:
    engine.add_image(TASK_IMAGE, start_error=RLIMITS)
    said = failure(per_task(engine), {})
    assert f"no container of {TASK_IMAGE} could start" in said and "default_ulimits = []" in said, said


def test_a_missing_image_is_the_engines_words_not_a_guess(engine: FakeEngine) -> None:
    said = failure(per_task(engine), {})
    assert f"no container of {TASK_IMAGE} could start: the image is not on this box" in said, said


@pytest.mark.parametrize("code, memory, means", [
    (0, None, "ok"), (2, None, "bad args"), (125, None, "the engine failed"), (127, None, "could not be run"),
    (137, "64m", "out of memory? the kind's limit is 64m"), (137, None, "killed by SIGKILL"),
    (143, None, "killed by SIGTERM"), (168, None, "killed by signal 40"), (1, None, "the kind failed (exit 1)"),
])
def test_the_exit_code_table(code: int, memory: str | None, means: str) -> None:
    assert means in meaning(code, memory=memory)
    assert signal_name(1) is None and signal_name(128) is None and signal_name(255) is None


# -- service containers: starting ---------------------------------------------------------------

def test_the_first_task_starts_the_service_and_the_next_ones_are_served_by_it(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum)
    handler = service(engine, clock, tmp_path)
    assert engine.running() == []
    assert handler({"values": [1, 2]}) == 3
    assert handler({"values": [3]}) == 3
    assert engine.count("start", handler.name) == 1 and engine.containers[handler.name].tasks == 2
    assert engine.containers[handler.name].labels == {"fogmesh.service-of": AGENT}


def test_a_slow_service_is_waited_for_until_it_listens(engine: FakeEngine, clock: FakeClock,
                                                       tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum, listens_after_s=1.5)
    began = clock.now
    assert service(engine, clock, tmp_path)({"values": [2]}) == 2
    assert began + 1.5 <= clock.now < began + 1.6                      # polled, not given up


def test_a_service_that_never_listens_is_removed_at_the_start_timeout_with_its_last_words(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum, listens_after_s=10_000,
                     logs="loading the model\nstill loading\n")
    handler = service(engine, clock, tmp_path)
    began = clock.now
    said = failure(handler, {"values": [1]})
    assert "did not listen on $FOGMESH_SOCKET within 60 s: loading the model | still loading" in said, said
    assert began + 60 <= clock.now < began + 60.1
    assert handler.name not in engine.containers


def test_a_service_that_exits_as_it_starts_fails_the_task_at_once(engine: FakeEngine, clock: FakeClock,
                                                                  tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum, exits_at_start=1, logs="ImportError: no module numpy")
    began = clock.now
    said = failure(service(engine, clock, tmp_path), {"values": [1]})
    assert "did not listen" in said and "ImportError: no module numpy" in said, said
    assert clock.now == began                                          # no wait for a container that exited


def test_a_service_the_engine_refuses_to_start_says_the_engines_words(engine: FakeEngine, clock: FakeClock,
                                                                      tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, start_error=RLIMITS)
    assert "error setting rlimits" in failure(service(engine, clock, tmp_path), {"values": [1]})


# -- service containers: serving ----------------------------------------------------------------

def test_a_service_that_refuses_the_args_is_bad_args(engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=serve_sum)
    with pytest.raises(BadArgs, match="values missing"):
        service(engine, clock, tmp_path)({})


@pytest.mark.parametrize("reply, says", [
    (b"not json\n", "answered no JSON: b'not json'"),
    (b"\xff\xfe\n", "answered no JSON"),                               # not UTF-8
    (b"[" * 100_000 + b"\n", "answered no JSON"),                      # nested past what json reads
    (b'{"sum": 3}\n', "answered neither result nor error"),
    (b"[1, 2]\n", "answered neither result nor error"),
    (b'{"error": "the database is down"}\n', f"service container of {SERVICE_IMAGE}: the database is down"),
    (b"", "closed the connection without an answer"),
    (b"\n", "closed the connection without an answer"),
])
def test_a_bad_reply_is_a_clear_error_and_the_service_serves_the_next_task(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path, reply: bytes, says: str) -> None:
    engine.add_image(SERVICE_IMAGE, service=lambda args: Reply(reply) if args.get("bad") else serve_sum(args))
    handler = service(engine, clock, tmp_path)
    assert says in failure(handler, {"bad": 1})
    assert handler({"values": [2]}) == 2
    assert engine.count("start", handler.name) == 1                    # the same service: kept


def test_a_reply_over_the_size_limit_is_refused_and_one_at_the_limit_taken(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    at_limit = b'{"result": "' + b"x" * (MAX_REPLY - 14) + b'"}'
    assert len(at_limit) == MAX_REPLY
    engine.add_image(SERVICE_IMAGE, service=lambda args: Reply(at_limit + b"\n" if args["fits"] else
                                                               b"x" * (3 * MAX_REPLY)))
    handler = service(engine, clock, tmp_path)
    assert f"answered more than {MAX_REPLY} bytes without ending its line" in failure(handler, {"fits": False})
    assert handler({"fits": True}) == "x" * (MAX_REPLY - 14)


def test_a_reply_is_read_to_its_first_line_end_and_no_further_than_the_limit() -> None:
    reader = ReplyReader(limit=100)
    assert not reader.feed(b'{"resu') and reader.feed(b'lt": 1}\nmore lines') and reader.line == b'{"result": 1}'
    reader = ReplyReader(limit=10)
    assert not reader.feed(b"12345") and reader.feed(b"678901")       # the 11th byte: stop reading
    assert reader.too_large and len(reader.line) == 10
    exact = ReplyReader(limit=10)
    assert exact.feed(b"1234567890\n") and not exact.too_large
    closed = ReplyReader(limit=10)
    assert closed.feed(b"") and closed.line == b""
    assert encode_request({"values": [1]}) == b'{"values": [1]}\n'


def test_a_service_that_crashes_mid_task_fails_it_clearly_and_the_next_task_starts_a_fresh_one(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=lambda args: Crash(3) if args.get("crash") else serve_sum(args))
    handler = service(engine, clock, tmp_path)
    assert handler({"values": [1]}) == 1
    said = failure(handler, {"crash": 1})
    assert "closed the connection without an answer (it exited with 3)" in said, said
    assert handler({"values": [2]}) == 2
    assert engine.count("start", handler.name) == 2 and engine.count("remove", handler.name) == 1


def test_a_service_killed_for_memory_says_so(engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=lambda args: Crash(137, oom=True))
    said = failure(service(engine, clock, tmp_path, memory="64m"), {})
    assert "(it exited with 137: out of memory? the kind's limit is 64m)" in said, said


def test_a_hung_service_is_removed_and_the_next_task_starts_a_fresh_one(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    engine.add_image(SERVICE_IMAGE, service=lambda args: Hang() if args.get("hang") else serve_sum(args))
    handler = service(engine, clock, tmp_path)
    began = clock.now
    assert "did not answer within 3 s; removed" in failure(handler, {"hang": 1})
    assert clock.now == began + 3 and handler.name not in engine.containers
    assert handler({"values": [5]}) == 5 and engine.count("start", handler.name) == 2


def test_tasks_in_flight_when_the_service_dies_each_get_a_clear_error(
        engine: FakeEngine, clock: FakeClock, tmp_path: Path) -> None:
    handler = service(engine, clock, tmp_path)
    other_worker = dataclasses.replace(handler)            # another worker's copy of the handler
    said: list[str] = []

    def behaviour(args: dict[str, Any]) -> Reply | Crash:
        if args.get("crash"):
            return Crash(3)
        said.append(failure(other_worker, {"crash": 1}))   # meanwhile, another task crashes it
        return answer(1)                                   # too late: its connection is gone

    engine.add_image(SERVICE_IMAGE, service=behaviour)
    said.append(failure(handler, {"values": [1]}))
    assert len(said) == 2 and all("without an answer (it exited with 3)" in s for s in said), said


# -- the pure decisions, one by one -------------------------------------------------------------

def test_a_starting_service_is_ready_when_it_listens_failed_when_it_exits_or_at_the_deadline() -> None:
    wait = StartWait.begin(100.0, timeout_s=60)
    assert wait.step(listening=False, running=True, now=100.0) is Start.WAIT
    assert wait.step(listening=True, running=True, now=159.9) is Start.READY
    assert wait.step(listening=False, running=False, now=100.1) is Start.FAILED
    assert wait.step(listening=False, running=True, now=160.0) is Start.FAILED


def test_the_engines_state_of_a_container_is_read() -> None:
    assert parse_state("true 0 false\n") == ContainerState(True, 0, False)
    assert parse_state("false 137 true") == ContainerState(False, 137, True)
    assert parse_state("") is None and parse_state("maybe 0 false") is None and parse_state("true x false") is None
