"""The agent's two MQTT connections: task intake (its session holds the tasks
a rescue can take over; it acknowledges a task only once answered, so its
in-flight window fills up under load), and control (presence and its will,
claims, the offload inbox), which must never wait behind that window; and
what a task message from them looks like to the core (:func:`as_task`)."""

from __future__ import annotations

from typing import Any

from fogmesh.mqtt import Message, MqttClient, Will
from fogmesh.properties import with_mqtt5_properties

# Longest wait between reconnect attempts. A broker back from a restart has no $share
# subscription until agents renew theirs (mosquitto 2.0 does not restore them), and it
# drops what devices publish meanwhile: agents must be back before devices are.
RECONNECT_MAX_S = 0.5


def make_clients(agent: Any, *, mqtt5: bool) -> tuple[MqttClient, MqttClient]:
    """The task and control clients of ``agent`` (an :class:`~fogmesh.edge_agent.agent.Agent`),
    wired to its dispatcher."""
    agent_id, root_tag, d = agent.agent_id, agent._root_tag, agent.dispatcher
    # RabbitMQ (amqp dispatch): a persistent MQTT session is a queue on one node, and a client
    # back on another node while that one is down cannot resume it: sessions are clean there.
    keep = not agent.options.amqp
    client = MqttClient(
        agent._broker, client_id=f"fa-{agent_id}-{root_tag}", clean_session=not keep, manual_ack=True,
        reconnect_max=RECONNECT_MAX_S, keepalive=agent.options.keepalive_s,
        on_message=lambda m: agent._arrived(agent.client, m, task_link=True),
        on_connection=lambda up: d.link_changed(control=False, up=up, session_kept=agent.client.session_present),
        # Shared dispatch answers on this connection: those cut off unconfirmed go out
        # again when their task comes back (or at once: no session), so the core must hear of them.
        on_withdrawn=lambda tags: d.withdrawn(tags, control=False), on_refused=agent._refused, mqtt5=mqtt5)
    ctl = MqttClient(
        agent._broker, client_id=f"fa-{agent_id}-{root_tag}-ctl", clean_session=not keep, manual_ack=True,
        reconnect_max=RECONNECT_MAX_S, keepalive=agent.options.keepalive_s,
        will=Will(agent.topics.presence(agent_id), agent.announcer.offline_payload()),
        on_message=lambda m: agent._arrived(agent.ctl, m, task_link=False),
        on_connection=lambda up: d.link_changed(control=True, up=up, session_kept=agent.ctl.session_present),
        on_withdrawn=lambda tags: d.withdrawn(tags, control=True), on_confirmed=d.confirmed, on_refused=agent._refused,
        mqtt5=mqtt5)
    return client, ctl


def as_task(message: Message) -> Message:
    """A message from the task connection with its MQTT 5 properties merged
    into the task's JSON (fogmesh.properties); 3.1.1 messages as they are."""
    if message.properties is None:
        return message
    # Built, not dataclasses.replace(): that costs as much as the merge itself, on every MQTT 5 task.
    return Message(topic=message.topic, payload=with_mqtt5_properties(message.payload, message.properties),
                   qos=message.qos, retain=message.retain, mid=message.mid, generation=message.generation,
                   dup=message.dup, properties=message.properties)
