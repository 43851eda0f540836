"""Tier 1 (pure): the simulator is deterministic, conserves tasks, and runs the
agents' own policies."""

from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.battery import BatteryModel
from simulator import engine, scenario
from simulator.scenario import NodeSpec, Scenario, Workload

SHIPPED = Path(__file__).resolve().parent.parent / "scenarios"


def small(**workload):
    wl = Workload(rate_per_s=5.0, duration_s=120.0, **workload)
    nodes = (NodeSpec("a", capacity=1), NodeSpec("b", capacity=1, speed=2.0),
             NodeSpec("c", capacity=1, battery=BatteryModel(capacity_wh=0.05, percent=100)))
    return Scenario(name="small", nodes=nodes, workload=wl, presence_period_s=1.0, seed=3)


@pytest.mark.parametrize("policy", ["local", "round-robin", "random", "least-loaded", "energy"])
def test_every_generated_task_completes_misses_or_is_dropped(policy):
    result = engine.simulate(small(), policy)
    assert result.generated > 400 and engine.conserved(result)


def test_the_same_seed_gives_the_same_run():
    a = engine.simulate(small(), "random").summary()
    b = engine.simulate(small(), "random").summary()
    assert a == b


def test_another_seed_gives_another_run():
    assert engine.simulate(small(), "random", seed=1).summary() != \
        engine.simulate(small(), "random", seed=2).summary()


def test_a_battery_that_runs_flat_drops_its_work_and_is_reported():
    result = engine.simulate(small(), "local")
    assert result.first_flat_min is not None and result.dropped > 0


def test_collaboration_beats_local_on_skewed_load():
    sc = small(landing=("a",))
    local = engine.simulate(sc, "local").summary()
    spread = engine.simulate(sc, "least-loaded").summary()
    assert spread["mean_ms"] < local["mean_ms"] and spread["fog"] > 0


def test_heavy_work_goes_to_the_cloud_when_there_is_one():
    sc = replace(small(), workload=Workload(rate_per_s=2.0, duration_s=60.0, mix={"heavy": 1.0}))
    result = engine.simulate(sc, "least-loaded").summary()
    assert result["cloud"] == result["generated"] - result["dropped"] and result["bytes_to_cloud"] > 0


def test_the_shipped_case_study_loads_and_runs():
    sc = scenario.load(SHIPPED / "conpi-case-study.toml")
    assert [n.name for n in sc.nodes] == ["pi-sunny", "pi-shaded", "pi-partial"]
    short = replace(sc, workload=replace(sc.workload, duration_s=300.0))
    assert engine.conserved(engine.simulate(short, "energy"))
