"""Tier 1 (pure): sensor uplink aggregation arithmetic."""

import pytest

from fogmesh.cloud_bridge.aggregate import Aggregator, reading_value, topic_matches


@pytest.mark.parametrize("pattern,topic,ok", [
    ("fog/v1/sensors/+/temperature", "fog/v1/sensors/pi-1/temperature", True),
    ("fog/v1/sensors/+/temperature", "fog/v1/sensors/pi-1/humidity", False),
    ("fog/v1/sensors/#", "fog/v1/sensors/pi-1/temperature", True),
    ("fog/v1/sensors/+", "fog/v1/sensors/pi-1/temperature", False),
])
def test_topic_patterns_match_like_mqtt(pattern, topic, ok):
    assert topic_matches(pattern, topic) is ok


def test_readings_are_numbers_or_objects_with_a_value():
    assert reading_value(21.5) == 21.5 and reading_value({"value": 3}) == 3.0
    assert reading_value("hot") is None and reading_value(True) is None and reading_value({}) is None


def test_a_window_summarises_count_mean_min_max():
    agg = Aggregator((("s/+/t", 60.0),))
    for i, v in enumerate([20.0, 22.0, 24.0, 18.0]):
        assert agg.add("s/pi/t", v, 10, now=float(i)) == []
    (summary,) = agg.add("s/pi/t", 30.0, 10, now=61.0)       # the next window starts
    assert summary == {"topic": "s/pi/t", "start": 0.0, "end": 60.0, "count": 4, "mean": 21.0,
                       "min": 18.0, "max": 24.0}


def test_windows_are_per_topic_and_flushed_when_due():
    agg = Aggregator((("s/+/t", 10.0),))
    agg.add("s/a/t", 1.0, 5, now=0.0)
    agg.add("s/b/t", 5.0, 5, now=1.0)
    assert agg.next_due() == 10.0
    summaries = agg.flush(now=12.0)
    assert {s["topic"]: s["mean"] for s in summaries} == {"s/a/t": 1.0, "s/b/t": 5.0}


def test_unmatched_topics_and_non_numbers_are_counted_not_aggregated():
    agg = Aggregator((("s/+/t", 10.0),))
    agg.add("other/topic", 1.0, 5, now=0.0)
    agg.add("s/a/t", "n/a", 7, now=0.0)
    assert (agg.bytes_in, agg.skipped, agg.readings) == (7, 1, 0)
