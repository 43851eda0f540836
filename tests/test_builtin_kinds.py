"""Tier 1: the built-in kinds' answers and their argument errors."""

import hashlib

import pytest

from fogmesh import builtin_kinds as k
from fogmesh.registry import BadArgs


def test_echo_returns_args():
    assert k.echo({"a": [1]}) == {"a": [1]}


def test_sum_and_stats():
    assert k.total({"values": [1, 2, 3.5]}) == 6.5
    s = k.stats({"values": [2, 4, 4, 4, 5, 5, 7, 9]})
    assert (s["count"], s["mean"], s["stdev"], s["min"], s["max"]) == (8, 5, 2, 2, 9)


def test_stats_of_nothing_is_defined():
    assert k.stats({"values": []})["count"] == 0


@pytest.mark.parametrize("args", [{}, {"values": "12"}, {"values": [1, "2"]}, {"values": [True]}])
def test_numbers_are_checked(args):
    with pytest.raises(BadArgs):
        k.total(args)


def test_sha256_of_data_matches_hashlib():
    assert k.sha256({"data": "abc"})["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_sha256_rounds_chain_the_digest():
    once = hashlib.sha256(b"abc").digest()
    assert k.sha256({"data": "abc", "rounds": 2})["sha256"] == hashlib.sha256(once).hexdigest()


def test_sha256_size_generates_that_many_bytes():
    assert k.sha256({"size": 1000})["bytes"] == 1000


@pytest.mark.parametrize("args", [{"ms": -1}, {"ms": "1"}, {"ms": 10**9}])
def test_sleep_refuses_bad_durations(args):
    with pytest.raises(BadArgs):
        k.sleep(args)
