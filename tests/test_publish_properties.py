"""Tier 1 (pure): the MQTT 5 PUBLISH property block fogmesh reads and writes
itself, checked against paho's own encoder and decoder."""

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fogmesh import publish_properties
from fogmesh.properties import MessageProperties

FULL = MessageProperties(response_topic="app/replies/7", correlation_data=b"\x00\xffid",
                         user_properties=(("traceparent", "00-ab-cd-01"), ("k", "v"), ("k", "w")), expiry_s=30)


def paho_props(props):
    p = Properties(PacketTypes.PUBLISH)
    p.ResponseTopic = props.response_topic
    p.CorrelationData = props.correlation_data
    p.UserProperty = list(props.user_properties)
    p.MessageExpiryInterval = props.expiry_s
    return p


def test_what_paho_encodes_decodes_to_the_same_properties():
    props, end, _ = publish_properties.decode(paho_props(FULL).pack() + b"payload")
    assert props == FULL and end == len(paho_props(FULL).pack())


def test_what_fogmesh_encodes_paho_decodes_to_the_same_properties():
    p = Properties(PacketTypes.PUBLISH)
    p.unpack(publish_properties.encode(FULL))
    assert (p.ResponseTopic, p.CorrelationData, p.UserProperty, p.MessageExpiryInterval) == \
        ("app/replies/7", b"\x00\xffid", [("traceparent", "00-ab-cd-01"), ("k", "v"), ("k", "w")], 30)


def test_no_properties_is_an_empty_block_both_ways():
    assert publish_properties.encode(None) == b"\x00"
    assert publish_properties.decode(b"\x00rest") == (None, 1, frozenset())


def test_properties_fogmesh_does_not_map_are_skipped_and_reported():
    block = bytes([8, 0x01, 1, 0x03]) + b"\x00\x03a/b"        # payload format, content type
    assert publish_properties.decode(block) == (None, 9, frozenset({1, 3}))


@pytest.mark.parametrize("block", [b"\x05\x08\x00\x09ab", b"\x03\x11\x00\x00", b"\x02\x23", b"\x80\x80\x80\x80\x01",
                                   b"\x06\x08\x00\x01a\x08\x00"])
def test_a_malformed_or_foreign_block_is_refused(block):
    with pytest.raises(ValueError):
        publish_properties.decode(block)
