"""The compose file: valid against the compose specification, and runnable:
its process testbed (every service's command and environment as local
processes on loopback ports) carries a task end to end, including one heavy
task through the bridge to a cloud worker, and `fogmesh doctor` finds
nothing to fix there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest

from fogmesh.broker.ports import free_port
from fogmesh.devices.client import FogClient
from fogmesh.mqtt import MqttClient
from tests.compose_testbed import REPO, ProcessTestbed, load, start_order
from tests.waiting import wait_until

COMPOSE = REPO / "docker-compose.yml"
# The compose-spec JSON schema as shipped in docker-compose 1.29.2 (Apache-2.0), vendored.
SCHEMA = json.loads((Path(__file__).parent / "compose_spec.json").read_text())
VALIDATOR = jsonschema.Draft201909Validator(SCHEMA)


def test_the_compose_file_is_valid_compose():
    VALIDATOR.validate(load(COMPOSE))


def test_the_schema_check_does_catch_mistakes():
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate({"services": {"x": {"image": "a", "restart_policy": "always"}}})


def test_the_testbed_has_every_part_with_health_checks_and_restart_policies():
    services = load(COMPOSE)["services"]
    commands = " ".join(str(s.get("command", "")) for s in services.values())
    for part in ("fogmesh agent", "fogmesh bridge", "fogmesh cloud-worker", "device camera",
                 "device sensor", "device actuator", "--battery-model"):
        assert part in commands
    assert sum("fogmesh agent" in str(s.get("command")) for s in services.values()) == 3
    assert sum("cloud-worker" in str(s.get("command")) for s in services.values()) == 2
    assert all(s.get("restart") == "unless-stopped" for s in services.values())
    assert {"edge-broker", "cloud-broker", "pi-1"} <= {n for n, s in services.items() if "healthcheck" in s}
    assert start_order(services).index("edge-broker") < start_order(services).index("pi-1")


@pytest.mark.timeout(150)
def test_the_process_testbed_built_from_the_compose_file_runs_tasks(tmp_path):
    bed = ProcessTestbed(COMPOSE, tmp_path).start()
    try:
        edge = bed.url("edge-broker")
        with FogClient(edge, device="testbed") as client:
            def answered():
                try:
                    return client.send("echo", {"hi": 1}).result(timeout=2).ok
                except TimeoutError:
                    return False
            wait_until(answered, timeout=60, what="an agent of the testbed to answer")
            health = {}
            watch = MqttClient(edge, on_message=lambda m: health.update(orjson.loads(m.payload)))
            watch.start()
            watch.subscribe("fog/v1/bridge/farm")
            wait_until(lambda: health.get("state") == "online" and health.get("cloud_workers", 1) >= 1,
                       timeout=60, what="the bridge online with cloud workers")
            watch.stop()
            heavy = None
            for _ in range(20):     # agents learn of the bridge from its presence
                heavy = client.send("sha256", {"size": 1000}, weight="heavy").result(timeout=30)
                if heavy.tier == "cloud":
                    break
            assert heavy is not None and heavy.ok and heavy.tier == "cloud", heavy
        # an installer's first command on the running testbed: nothing to fix
        doctor = subprocess.run([sys.executable, "-m", "fogmesh", "doctor", "--broker", edge, "--id", "pi-9",
                                 "--json", "--ws-port", str(free_port()), "--state-dir", str(tmp_path / "doc")],
                                capture_output=True, text=True, timeout=60,
                                # the testbed runs no container kinds: this box's engine is not its to check
                                env={**os.environ, "FOGMESH_CONTAINER_ENGINE": "none"})
        checks = json.loads(doctor.stdout)["checks"]
        assert doctor.returncode == 0 and [c for c in checks if c["status"] in ("warn", "fail")] == [], checks
        assert next(c for c in checks if c["name"] == "clock")["status"] == "ok"
        assert all(bed.alive().values()), {n: bed.log(n)[-500:] for n, up in bed.alive().items() if not up}
    finally:
        bed.stop()
