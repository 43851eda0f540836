"""Tier 1 (pure): the simulator is deterministic, conserves tasks, and runs the
agents' own policies."""

from dataclasses import replace
from pathlib import Path

import pytest

from fogmesh.edge_agent.battery import BatteryModel
from fogmesh.simulator import engine, scenario
from fogmesh.simulator.scenario import NodeSpec, Scenario, Workload

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


# -- the case study, the city, traces, plots ---------------------------------------------
def case_study():
    return scenario.load(SHIPPED / "conpi-case-study.toml")


def test_the_case_study_offloads_at_50_and_takes_the_work_back_at_60():
    result = engine.simulate(case_study(), "energy")
    shaded = [(what, pct) for _, node, what, pct in result.switches if node == "pi-shaded"]
    assert [w for w, _ in shaded[:2]] == ["offload", "take-back"]
    assert 49.0 <= shaded[0][1] <= 50.0          # offload as the battery reaches 50 %
    assert 60.0 < shaded[1][1] <= 61.0           # take back just above 60 %
    assert result.tiers["fog"] > 0


def test_the_energy_policy_keeps_the_shaded_pi_running_longer_than_local():
    local = engine.simulate(case_study(), "local")
    energy = engine.simulate(case_study(), "energy")
    assert local.first_flat_min is not None and local.dropped > 0
    assert energy.first_flat_min is None or energy.first_flat_min > local.first_flat_min
    assert energy.node_minutes > local.node_minutes
    assert engine.conserved(local) and engine.conserved(energy)


def test_city_1000_runs_in_ci_size_and_consolidation_saves_energy():
    sc = scenario.load(SHIPPED / "city-1000.toml", scale=0.05)
    assert len(sc.nodes) == 50 and sc.workload.tasks == 50_000
    spread = engine.simulate(sc, "least-loaded")
    packed = engine.simulate(sc, "consolidate")
    local = engine.simulate(sc, "local")
    assert all(engine.conserved(r) for r in (spread, packed, local))
    assert packed.energy_wh < spread.energy_wh                      # idle nodes slept
    assert spread.summary()["deadline_hit_pct"] > local.summary()["deadline_hit_pct"]   # hot spots relieved


def test_peers_are_the_nodes_of_the_same_site():
    sites = engine._sites([f"n{i}" for i in range(25)], 10)
    assert len(sites["n0"]) == 8 and "n3" in sites["n0"] and "n1" not in sites["n0"]
    assert all(n not in peers for n, peers in sites.items())


def test_a_csv_trace_replays_exactly_its_rows(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("time,device,kind,size_kb\n0.5,cam-1,medium,200\n0.7,th-2,light,\n1.0,cam-1,heavy,900\n")
    sc = replace(small(), workload=Workload(trace=str(trace)))
    result = engine.simulate(sc, "least-loaded")
    assert result.generated == 3 and engine.conserved(result)
    assert result.bytes_to_cloud == 900 * 1024


@pytest.mark.parametrize("row,message", [("x,cam,light,1", "time,device,kind"), ("1,cam,huge,1", "kind must be"),
                                         ("5,cam,light,1\n1,cam,light,1", "backwards")])
def test_bad_trace_rows_say_which_row_and_why(tmp_path, row, message):
    trace = tmp_path / "t.csv"
    trace.write_text("time,device,kind,size_kb\n" + row + "\n")
    with pytest.raises(ValueError, match=message):
        engine.simulate(replace(small(), workload=Workload(trace=str(trace))), "local")


def test_sleeping_nodes_use_less_energy_and_wake_late():
    nodes = tuple(NodeSpec(f"n{i}", capacity=2, idle_w=5.0, task_w=2.0, sleep_w=0.5, sleep_after_s=2.0,
                           wake_ms=250.0) for i in range(4))
    sc = Scenario(name="sleepy", nodes=nodes, workload=Workload(rate_per_s=0.5, duration_s=600.0,
                                                                mix={"medium": 1.0}), seed=5)
    awake = replace(sc, nodes=tuple(replace(n, sleep_w=None) for n in nodes))
    slept, stayed = engine.simulate(sc, "local"), engine.simulate(awake, "local")
    assert slept.energy_wh < stayed.energy_wh / 2
    assert slept.summary()["mean_ms"] > stayed.summary()["mean_ms"]


def test_plots_are_written_as_png(tmp_path):
    from fogmesh.simulator import plots
    runs = [engine.simulate(small(), p) for p in ("local", "energy")]
    battery = plots.battery_plot(runs, tmp_path / "b.png", title="small")
    cdf = plots.latency_cdf_plot(runs, tmp_path / "c.png", title="small", deadline_ms=2000)
    for path in (battery, cdf):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nodes_of_a_large_site_announce_at_the_agents_pace_and_receive_a_flat_rate():
    many = tuple(NodeSpec(f"n{i:03d}", capacity=1) for i in range(60))
    sc = Scenario(name="big-site", nodes=many, workload=Workload(rate_per_s=5.0, duration_s=30.0),
                  presence_period_s=5.0, seed=3)
    paced = engine.simulate(sc, "least-loaded").summary()
    fixed = engine.simulate(replace(sc, presence_paced=False), "least-loaded").summary()
    assert paced["presence_every_s"] == 20.0 and paced["presence_in_per_node_s"] < 3.0
    assert fixed["presence_every_s"] == 5.0 and fixed["presence_in_per_node_s"] > 11.0
