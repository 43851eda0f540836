"""fogmesh: MQTT publish/subscribe middleware for edge/fog task placement.

The ``fogmesh`` package is the wire contract every other part imports: topic
names (:mod:`fogmesh.topics`), message schema (:mod:`fogmesh.messages`), the
JSON codec (:mod:`fogmesh.codec`), the task-kind registry, and the one MQTT
client adapter (:mod:`fogmesh.mqtt`).
"""

__version__ = "0.1.0"
