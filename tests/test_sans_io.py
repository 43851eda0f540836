"""Tier 1: the sans-IO core stays free of IO, clocks and randomness.

Checked statically from each module's imports, so a stray ``import time`` in
policy code fails here before it makes the simulator nondeterministic.
"""

from pathlib import Path

import pytest

from tests.imports import imported_names

ROOT = Path(__file__).resolve().parent.parent
PURE_MODULES = [
    "fogmesh/topics.py", "fogmesh/messages.py", "fogmesh/codec.py", "fogmesh/errors.py",
    "edge_agent/core.py", "fogmesh/claims.py", "edge_agent/recent.py", "edge_agent/presence.py",
    "edge_agent/actions.py", "edge_agent/entry.py", "edge_agent/offloading.py",
    "edge_agent/failover.py", "fogmesh/offers.py", "edge_agent/placement.py",
    "edge_agent/peers.py", "edge_agent/battery.py", "edge_agent/pipelines.py",
    "fogmesh/frames.py", "devices/commands.py", "devices/sensors.py", "fogmesh/fleet.py",
    "edge_agent/ratelimit.py", "edge_agent/claiming.py", "edge_agent/answering.py",
    "edge_agent/asking.py", "edge_agent/deaths.py", "broker/shared.py",
    "edge_agent/ordering.py", "ops/units.py", "ops/report.py", "ops/failover.py",
    "devices/homeassistant.py", "fogmesh/properties.py", "fogmesh/publish_properties.py",
    "fogmesh/dashboard/model.py", "fogmesh/percentiles.py",
    "edge_agent/runner.py", "edge_agent/claim_book.py", "edge_agent/offer_book.py", "edge_agent/confirmations.py",
    "edge_agent/ask_book.py", "edge_agent/core_state.py", "edge_agent/intake.py", "cloud_bridge/forwarding.py",
    "fogmesh/mqtt_framing.py", "fogmesh/container_diagnosis.py", "broker/keepalive.py", "broker/session_state.py",
    "broker/packet_checks.py",
    "fogmesh/dashboard/guard.py", "fogmesh/dashboard/sessions.py", "fogmesh/dashboard/presses.py",
    "fogmesh/dashboard/attempts.py", "fogmesh/dashboard/streams.py", "fogmesh/dashboard/users_watch.py",
    "fogmesh/dashboard/exposure.py",
    "edge_agent/events.py", "edge_agent/rival_watch.py", "edge_agent/presence_hold.py", "edge_agent/journal_health.py",
    "edge_agent/stop_plan.py", "edge_agent/wakeup.py", "fogmesh/asks.py", "edge_agent/answer_book.py",
    "edge_agent/entry_table.py", "edge_agent/landing.py", "edge_agent/running.py", "edge_agent/peering.py",
    "edge_agent/mode.py",
    "fogmesh/deploy/manifest.py", "fogmesh/deploy/desired.py", "fogmesh/deploy/reported.py",
    "fogmesh/deploy/rollout.py", "fogmesh/deploy/fetching.py", "fogmesh/deploy/freshness.py",
    "fogmesh/deploy/preflight.py", "fogmesh/deploy/image_ref.py", "fogmesh/log_limit.py",
    "fogmesh/fields.py", "fogmesh/refusals.py", "fogmesh/announcements.py",
    "fogmesh/container_engine.py", "fogmesh/container_protocol.py", "fogmesh/container_exits.py",
    "fogmesh/service_lifecycle.py", "fogmesh/container_fake.py",
    "fogmesh/deploy/flow.py", "fogmesh/deploy/flow_state.py", "fogmesh/deploy/flow_events.py",
    "fogmesh/deploy/self_check.py", "fogmesh/deploy/report_gate.py",
    "fogmesh/task_queue.py", "fogmesh/queue_plan.py",
    "fogmesh/join_token.py", "fogmesh/identities.py", "broker/logins.py", "broker/connect_gate.py",
    "enrollment/spent.py", "enrollment/registrar.py",
]
FORBIDDEN = {"socket", "ssl", "select", "selectors", "asyncio", "threading", "multiprocessing",
             "subprocess", "time", "random", "os", "paho", "amqtt", "psutil", "gpiozero", "cv2",
             "logging", "urllib", "http", "fogmesh.mqtt", "concurrent"}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_library(module):
    bad = {n for n in imported_names(ROOT / module)
           if n in FORBIDDEN or n.split(".")[0] in FORBIDDEN or n.startswith("fogmesh.mqtt.")}
    assert not bad, f"{module} imports {sorted(bad)}"


WRAPPING_PACKAGES = ("mqtt", "embedded")      # fogmesh/mqtt/ (paho), broker/embedded/ (amqtt)


def test_each_io_library_is_imported_by_exactly_one_module():
    owners: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).parts[0] in ("tests", "bench", "build", ".git", "node_modules"):
            continue
        for name in imported_names(path):
            top = name.split(".")[0]
            if top in ("paho", "amqtt", "psutil", "gpiozero", "cv2", "prometheus_client", "rich",
                       "matplotlib", "cryptography", "installer", "packaging", "pika", "segno"):
                # A package that wraps one library owns it as a whole.
                where = path.parent if path.parent.name in WRAPPING_PACKAGES else path
                owners.setdefault(top, set()).add(str(where.relative_to(ROOT)))
    assert owners == {"paho": {"fogmesh/mqtt"}, "amqtt": {"broker/embedded"},
                      "psutil": {"edge_agent/host_monitor.py"}, "gpiozero": {"devices/gpio.py"},
                      "cv2": {"devices/vision.py"}, "prometheus_client": {"edge_agent/metrics.py"},
                      "rich": {"fogmesh/monitor.py"}, "matplotlib": {"simulator/plots.py"},
                      "cryptography": {"fogmesh/deploy/signing.py"}, "installer": {"fogmesh/deploy/install.py"},
                      "packaging": {"fogmesh/deploy/compat.py"}, "pika": {"fogmesh/amqp_queue.py"},
                      "segno": {"enrollment/qr.py"}}
