"""A box back from a power cut (issue #36): killed without a word, booted
again after a while, it meets whatever its persistent sessions queued
meanwhile. It is online within seconds, no start-up check fails on its own
backlog, and every task the broker took is answered once, by it or a peer.
The CLI in separate processes, a fire-and-forget device beside a FogClient,
a plain subscriber counting replies (bench/outages.py, the same scenario as
`fogmesh bench faults --faults power-cut`)."""

from __future__ import annotations

import pytest

from fogmesh.bench.outages import power_cut

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_a_box_back_after_a_power_cut_is_online_within_seconds_and_nothing_is_lost(tmp_path, broker_name):
    run = power_cut(broker_name, tmp_path, down_s=12.0, rate=40.0, before_s=2.0, after_s=4.0)
    print(run)
    assert run.recover_s is not None and run.recover_s < 10.0, run
    assert run.submitted > 600, run
    assert (run.lost, run.run_twice, run.duplicate_replies) == (0, 0, 0), run
