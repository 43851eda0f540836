"""The zygote: workers forked from a copy of the agent made while it had one
thread. It must be started in a process with one thread, so each test runs
its scenario in a fresh interpreter (pytest's own process has threads) and
reads what it printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from fogmesh.edge_agent import zygote

pytestmark = pytest.mark.timeout(60)

PRELUDE = """
import json, os, signal, sys, time
from fogmesh.edge_agent.zygote import Zygote, ZygoteGone, usable

def echo(conn):
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job == "hang":
            time.sleep(3600)           # the hung job itself
        conn.send(("done", job, os.getpid()))

def say(**what):
    print(json.dumps(what), flush=True)
"""


def scenario(body: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines(proc: subprocess.Popen[str]) -> list[dict]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_a_forked_worker_runs_jobs_over_its_pipe_and_is_a_child_of_the_zygote():
    (seen,) = lines(scenario("""
        z = Zygote(echo); z.start()
        worker, conn = z.launch()
        conn.send("job-1")
        answer = conn.recv()
        say(answer=answer, worker=worker.pid, zygote=z.pid, alive=worker.is_alive(),
            parent=open(f"/proc/{worker.pid}/stat").read().split()[3])
        z.stop()
    """))
    assert seen["answer"] == ["done", "job-1", seen["worker"]]
    assert seen["alive"] is True
    assert int(seen["parent"]) == seen["zygote"]


def test_a_killed_worker_reports_the_signal_as_its_exit_code_and_its_pipe_closes():
    (seen,) = lines(scenario("""
        z = Zygote(echo); z.start()
        worker, conn = z.launch()
        conn.send("hang")
        worker.kill()
        worker.join(5)
        try:
            conn.recv(); closed = False
        except (EOFError, ConnectionResetError):   # reset: killed with the job unread
            closed = True
        say(code=worker.exitcode, closed=closed, alive=worker.is_alive())
        z.stop()
    """))
    assert seen == {"code": -signal.SIGKILL, "closed": True, "alive": False}


def test_the_zygote_kills_its_workers_and_leaves_when_its_owner_is_killed():
    proc = scenario("""
        z = Zygote(echo); z.start()
        workers = [z.launch() for _ in range(2)]
        say(zygote=z.pid, workers=[w.pid for w, _ in workers])
        time.sleep(3600)               # the owner stays until it is killed
    """)
    assert proc.stdout is not None
    seen = json.loads(proc.stdout.readline())
    tree = [psutil.Process(pid) for pid in [seen["zygote"], *seen["workers"]]]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [] or all(p.status() == psutil.STATUS_ZOMBIE for p in alive)


def test_without_its_zygote_a_launch_fails_with_zygote_gone():
    (seen,) = lines(scenario("""
        z = Zygote(echo); z.start()
        os.kill(z.pid, signal.SIGKILL); os.waitpid(z.pid, 0)
        try:
            z.launch(); error = None
        except ZygoteGone as exc:
            error = str(exc)
        say(error=error, is_oserror=isinstance(ZygoteGone("x"), OSError))
    """))
    assert "gone" in seen["error"] and seen["is_oserror"]


def test_the_zygote_is_not_used_once_the_process_runs_a_second_thread():
    stop = threading.Event()
    extra = threading.Thread(target=stop.wait, daemon=True)
    extra.start()
    try:
        assert not zygote.usable()
    finally:
        stop.set()
        extra.join()


def wait_answering(client, timeout=30):
    """Until the agent answers a task (it starts in its own process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.submit("sleep", {"ms": 1}, timeout=1)
            return
        except TimeoutError:
            assert time.monotonic() < deadline, "the agent never answered"


def test_an_agent_started_as_a_command_forks_its_workers_from_a_zygote_and_leaves_none_behind_on_kill_9(
        amqtt_broker, root, tmp_path):
    from fogmesh.devices.client import FogClient
    agent = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "zyg", "--broker",
                              amqtt_broker.url, "--root", root, "--log-level", "WARNING"],
                             env={**os.environ, "FOGMESH_STATE_DIR": str(tmp_path)})
    try:
        with FogClient(amqtt_broker.url, root=root) as client:
            wait_answering(client)
        children = psutil.Process(agent.pid).children()
        assert len(children) == 1                                   # the zygote
        assert len(children[0].children()) == 2                     # two workers
        tree = [children[0], *children[0].children()]
    finally:
        agent.kill()
        agent.wait(10)
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []


def test_a_pool_replaces_a_cancelled_worker_with_another_from_its_zygote():
    (seen,) = lines(scenario("""
        import threading
        from fogmesh.edge_agent.workers import WorkerPool
        from fogmesh.registry import Registry
        done, ready = [], threading.Event()
        def on_done(task_id, result, error, run_ms):
            done.append((task_id, error.code if error else None)); ready.set()
        pool = WorkerPool(1, Registry.from_entry_points(), on_done, name="t")
        pool.start()
        pool.submit("hung", "sleep", {"ms": 600000})
        time.sleep(0.3)                # the run starts in its worker, which reports nothing until it ends
        pool.cancel("hung")
        pool.submit("next", "sleep", {"ms": 1})
        ready.wait(10)
        import psutil
        direct = psutil.Process().children()
        running = [c for c in direct[0].children() if c.status() != psutil.STATUS_ZOMBIE]
        say(done=done, direct=len(direct), workers=[c.ppid() for c in running], zygote=direct[0].pid)
        pool.stop()
    """))
    assert seen["done"] == [["next", None]]
    assert seen["direct"] == 1 and seen["workers"] == [seen["zygote"]]


def test_workers_that_exited_are_reaped_so_kills_leave_no_zombies_behind():
    (seen,) = lines(scenario("""
        import psutil
        z = Zygote(echo); z.start()
        for _ in range(5):
            worker, conn = z.launch()
            worker.kill()
            conn.close()
        time.sleep(0.5)                  # the kills land
        last, conn = z.launch()          # any request reaps what has exited
        kids = psutil.Process(z.pid).children()
        say(kids=[k.pid for k in kids], last=last.pid)
        z.stop()
    """))
    assert seen["kids"] == [seen["last"]]


def test_a_sigterm_to_the_agents_process_group_finishes_the_running_task_and_restarts_no_worker(
        amqtt_broker, root, tmp_path):
    # A terminal's job control, `kill -- -PGID`, tini -g: the zygote and the workers get the SIGTERM too.
    # They are the agent's to stop: the task under way ends with its result (not worker_lost), no worker
    # is started again while the agent stops, and nothing is said about a pipe the signal broke.
    from fogmesh.devices.client import FogClient
    from fogmesh.mqtt import MqttClient
    from fogmesh.topics import Topics
    running = threading.Event()

    def presence(message) -> None:
        body = json.loads(message.payload or b"{}")
        if body.get("running", 0) >= 1:
            running.set()
    watch = MqttClient(amqtt_broker.url, on_message=presence)
    watch.start()
    watch.subscribe(Topics(root).presence("zyg"))
    agent = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "zyg", "--broker", amqtt_broker.url,
                              "--root", root, "--presence-period", "0.5"],
                             env={**os.environ, "FOGMESH_STATE_DIR": str(tmp_path)}, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        with FogClient(amqtt_broker.url, root=root) as client:
            wait_answering(client)
            future = client.send("sleep", {"ms": 1500})
            assert running.wait(10), "the task never ran"
            os.killpg(agent.pid, signal.SIGTERM)
            result = future.result(timeout=15)
        said = agent.communicate(timeout=30)[1]
    finally:
        watch.stop()
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    assert result.ok, result.reply
    assert agent.returncode == 0, said
    assert "starting a new one" not in said and "Broken pipe" not in said and "zygote" not in said, said
