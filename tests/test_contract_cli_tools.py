"""Tier 3: the contract round trip with the real mosquitto_pub / mosquitto_sub,
running exactly the commands topics.md shows to firmware authors."""

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from fogmesh.broker.mosquitto import mosquitto_binary

TOPICS_MD = Path(__file__).resolve().parent.parent / "topics.md"


def documented_commands() -> tuple[list[str], list[str]]:
    text = TOPICS_MD.read_text()
    block = text.split("<!-- contract-test", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("mosquitto_")]
    sub = next(shlex.split(ln) for ln in lines if ln.startswith("mosquitto_sub"))
    pub = next(shlex.split(ln) for ln in lines if ln.startswith("mosquitto_pub"))
    return sub, pub


def retarget(argv: list[str], port: int, root: str) -> list[str]:
    out = []
    for i, a in enumerate(argv):
        if i > 0 and argv[i - 1] == "-p":
            a = str(port)
        out.append(a.replace("fog/v1", root))
    return out


@pytest.fixture(autouse=True)
def need_clients():
    mosquitto_binary()
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            pytest.fail(f"{tool} missing: apt-get install mosquitto-clients")


def test_topics_md_shows_one_publish_and_one_subscribe():
    sub, pub = documented_commands()
    assert sub[0] == "mosquitto_sub" and pub[0] == "mosquitto_pub"
    assert "'fog/v1/tasks'" not in " ".join(pub) and "fog/v1/tasks" in pub


def test_documented_mosquitto_pub_and_sub_round_trip(broker, root, agents):
    agents("agent-1", broker.url, root)
    sub, pub = (retarget(c, broker.port, root) for c in documented_commands())
    # stdbuf: line-buffer mosquitto_sub so we can see its SUBACK before publishing
    listener = subprocess.Popen(["stdbuf", "-oL"] + sub + ["-d"], stdout=subprocess.PIPE, text=True)
    try:
        for line in listener.stdout:               # wait until the subscription is in place
            if "SUBACK" in line:
                break
        subprocess.run(pub, check=True, timeout=10)
        reply_line = ""
        for line in listener.stdout:
            if line.startswith(f"{root}/replies/"):
                reply_line = line
                break
        listener.wait(10)
    finally:
        listener.kill()
    topic, _, body = reply_line.partition(" ")
    reply = json.loads(body)
    assert topic == f"{root}/replies/sensor-7"
    assert reply["id"] == "sensor-7-0001" and reply["status"] == "ok" and reply["result"] == 66.0
    assert reply["worker"] == "agent-1" and reply["tier"] == "local"
    assert set(reply["ms"]) == {"queue", "run", "total"}
