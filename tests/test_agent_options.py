"""AgentOptions: how an agent runs, as one value (edge_agent/options.py)."""

from __future__ import annotations

import argparse

import pytest

from fogmesh.edge_agent import cli
from fogmesh.edge_agent.options import AgentOptions

pytestmark = pytest.mark.timeout(10)


def test_the_defaults_are_those_of_fogmesh_agent_without_flags():
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["agent", "--id", "a1"])
    o = AgentOptions()
    assert (o.root, o.concurrency, o.max_queue, o.dispatch, o.mqtt, o.presence_period, o.offer_lease_s,
            o.takeover_grace_s, o.device_rate, o.metrics_port, o.metrics_addr) == \
        (args.root, args.concurrency, args.max_queue, args.dispatch, args.mqtt, args.presence_period,
         args.offer_lease, args.takeover_grace, args.device_rate, args.metrics_port, args.metrics_addr)


def test_an_unknown_dispatch_is_refused_where_the_options_are_made():
    with pytest.raises(ValueError, match="dispatch must be one of"):
        AgentOptions(dispatch="round-robin")


def test_an_unknown_protocol_is_refused_where_the_options_are_made():
    with pytest.raises(ValueError, match="mqtt must be one of"):
        AgentOptions(mqtt="4")


@pytest.mark.parametrize("period", [0.01, 7200.0])
def test_a_presence_period_consumers_would_refuse_is_refused_where_the_options_are_made(period):
    with pytest.raises(ValueError, match="presence_period must be 0.1-3600 seconds"):
        AgentOptions(presence_period=period)


def test_at_a_site_of_any_size_the_period_announced_stays_within_what_consumers_take():
    from fogmesh.announcements import MAX_PERIOD_S
    from fogmesh.edge_agent.presence import presence_pace
    assert presence_pace(base_period=5.0, site=100_000).period == MAX_PERIOD_S
