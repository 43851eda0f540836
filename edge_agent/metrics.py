"""Prometheus metrics of one agent (``fogmesh agent --metrics-port 9108``; off
by default). The only module that imports prometheus_client. A collector reads
the core's own counters and latency histogram at scrape time, so there is no
second bookkeeping on the hot path."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterator

from fogmesh.edge_agent.actions import LATENCY_BOUNDS_MS, Counters
from fogmesh.errors import FogmeshError


class AgentCollector:
    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        core = self.agent.core
        if core is None:
            return
        me = [self.agent.agent_id]
        for f in fields(Counters):
            c = CounterMetricFamily(f"fogmesh_agent_{f.name}", f"fogmesh agent counter {f.name}",
                                    labels=["agent"])
            c.add_metric(me, getattr(core.counters, f.name))
            yield c
        for name, value, doc in (("queued", core.queued, "tasks waiting for a worker"),
                                 ("running", core.running, "tasks running"),
                                 ("held", core.held, "tasks held in any state"),
                                 ("capacity", self.agent.concurrency, "worker processes")):
            g = GaugeMetricFamily(f"fogmesh_agent_{name}", doc, labels=["agent"])
            g.add_metric(me, value)
            yield g
        if core.battery is not None:
            g = GaugeMetricFamily("fogmesh_agent_battery_percent", "battery charge", labels=["agent"])
            g.add_metric(me, core.battery)
            yield g
        h = core.latency
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, LATENCY_BOUNDS_MS), "+Inf"], h.counts):
            cumulative += count
            buckets.append((bound, cumulative))
        hist = HistogramMetricFamily("fogmesh_agent_task_latency_ms", "receipt to reply, milliseconds",
                                     labels=["agent"])
        hist.add_metric(me, buckets, sum_value=h.total_ms)
        yield hist


def serve(agent: Any, *, port: int, addr: str = "127.0.0.1") -> Any:
    """Start the /metrics HTTP endpoint; returns the server (``.shutdown()``)."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise FogmeshError("metrics need prometheus-client: pip install 'fogmesh[metrics]'") from exc
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise FogmeshError(f"cannot serve metrics on {addr}:{port}: {exc}") from exc
    return server
