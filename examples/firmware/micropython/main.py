"""fogmesh device firmware for MicroPython (ESP32, Raspberry Pi Pico W, and the
unix port used by fogmesh's tests), with umqtt.simple from micropython-lib.

What it does, on the plain MQTT + JSON contract of topics.md:
- publishes a temperature reading every ``every_s`` seconds on
  ``{root}/sensors/{device}/temperature``;
- submits a task with each reading (``sum`` of the last readings, as an
  example) on ``{root}/tasks/{device}`` and waits for its reply on
  ``{root}/replies/{device}``; without a reply in ``reply_timeout_s`` it
  publishes the task again under the same id (``attempt`` 2, 3, ...): agents
  answer a repeated id once, with the same reply, so a task lost in a broker
  restart is still answered and never run twice;
- drives a relay from ``{root}/actuators/{device}/relay/set`` (``on``, ``off``,
  ``toggle`` or ``{"op": "pulse", "ms": N}``) and publishes its state, retained,
  on ``{root}/actuators/{device}/relay/state``.

Flash main.py and umqtt/simple.py, edit CONFIG. On the unix port:
    micropython main.py HOST PORT DEVICE ROOT [CYCLES]
"""

import json
import sys
import time

from umqtt.simple import MQTTClient

try:
    from machine import Pin
except ImportError:            # the unix port: a pin that remembers its value
    class Pin:
        OUT = 1

        def __init__(self, number, mode=None):
            self.number = number
            self._value = 0

        def value(self, v=None):
            if v is None:
                return self._value
            self._value = 1 if v else 0

CONFIG = {
    "broker": "192.168.1.10", "port": 1883, "device": "esp32-7", "root": "fog/v1",
    "every_s": 10, "reply_timeout_s": 5, "tries": 12, "relay_pin": 5,
}


def boot_id():
    """A new value at every boot, so task ids never repeat after a reset."""
    try:
        import os
        return "%08x" % int.from_bytes(os.urandom(4), "big")
    except (ImportError, AttributeError):
        return "%08x" % (time.ticks_ms() & 0xFFFFFFFF)


def read_temperature(n):
    return 21.0 + (n % 5) * 0.5          # replace with your sensor


class Device:
    def __init__(self, cfg):
        self.cfg = cfg
        self.root = cfg["root"]
        self.name = cfg["device"]
        self.replies = "%s/replies/%s" % (self.root, self.name)
        self.commands = "%s/actuators/%s/+/set" % (self.root, self.name)
        self.relay = Pin(cfg["relay_pin"], Pin.OUT)
        self.answers = {}
        self.boot = boot_id()
        self.seq = 0
        self.readings = []
        self.changed = None        # an actuator whose new state is still to be published
        self.client = MQTTClient(self.name + "-" + self.boot, cfg["broker"], cfg["port"], keepalive=30)
        self.client.set_callback(self.on_message)

    def connect(self):
        self.client.connect()
        self.client.subscribe(self.replies.encode(), 1)
        self.client.subscribe(self.commands.encode(), 1)
        self.publish_state("relay")

    def on_message(self, topic, msg):
        topic = topic.decode()
        if topic == self.replies:
            reply = json.loads(msg)
            self.answers[reply.get("id")] = reply
        elif topic.endswith("/set"):
            self.command(topic.split("/")[-2], msg.decode().strip())

    def command(self, actuator, text):
        if actuator != "relay":
            return
        op, ms = text, 0
        if text.startswith("{"):
            body = json.loads(text)
            op, ms = body.get("op"), int(body.get("ms", 0))
        if op == "on":
            self.relay.value(1)
        elif op == "off":
            self.relay.value(0)
        elif op == "toggle":
            self.relay.value(0 if self.relay.value() else 1)
        elif op == "pulse":
            self.relay.value(1)
            time.sleep_ms(min(ms, 10000))
            self.relay.value(0)
        else:
            return
        # Published from the main loop, not here: umqtt.simple's QoS 1 publish
        # reads the socket until its PUBACK, and a publish inside this callback
        # (itself inside such a read) could swallow the outer one's PUBACK.
        self.changed = actuator

    def poll(self):
        """Handle what has arrived, then publish any state it changed."""
        self.client.check_msg()
        if self.changed is not None:
            actuator, self.changed = self.changed, None
            self.publish_state(actuator)

    def publish_state(self, actuator):
        state = {"state": "on" if self.relay.value() else "off", "device": self.name,
                 "actuator": actuator, "ts": time.time()}
        topic = "%s/actuators/%s/%s/state" % (self.root, self.name, actuator)
        self.client.publish(topic.encode(), json.dumps(state).encode(), True, 1)

    def reading(self, n):
        value = read_temperature(n)
        self.readings = (self.readings + [value])[-5:]
        topic = "%s/sensors/%s/temperature" % (self.root, self.name)
        self.client.publish(topic.encode(), json.dumps({"value": value}).encode())

    def submit(self, kind, args):
        """One task; re-sent under the same id until answered or out of tries."""
        self.seq += 1
        task_id = "%s-%s-%d" % (self.name, self.boot, self.seq)
        topic = ("%s/tasks/%s" % (self.root, self.name)).encode()
        for attempt in range(1, self.cfg["tries"] + 1):
            task = {"id": task_id, "kind": kind, "args": args, "reply_to": self.replies}
            if attempt > 1:
                task["attempt"] = attempt
            self.client.publish(topic, json.dumps(task).encode(), False, 1)
            deadline = time.ticks_add(time.ticks_ms(), int(self.cfg["reply_timeout_s"] * 1000))
            while time.ticks_diff(deadline, time.ticks_ms()) > 0:
                self.poll()
                if task_id in self.answers:
                    return self.answers.pop(task_id), attempt
                time.sleep_ms(20)
        return None, self.cfg["tries"]

    def serve(self, seconds):
        """Handle actuator commands for a while."""
        deadline = time.ticks_add(time.ticks_ms(), int(seconds * 1000))
        while time.ticks_diff(deadline, time.ticks_ms()) > 0:
            self.poll()
            time.sleep_ms(20)

    def run(self, cycles=None):
        self.connect()
        n = 0
        while cycles is None or n < cycles:
            self.reading(n)
            reply, attempts = self.submit("sum", {"values": self.readings})
            print("REPLY", json.dumps({"reply": reply, "attempts": attempts}))
            self.serve(self.cfg["every_s"])
            n += 1
        self.client.disconnect()


def main():
    cfg = dict(CONFIG)
    args = sys.argv[1:] if hasattr(sys, "argv") else []
    cycles = None
    if len(args) >= 4:
        cfg.update(broker=args[0], port=int(args[1]), device=args[2], root=args[3])
    if len(args) >= 5:
        cycles = int(args[4])
    if len(args) >= 6:
        cfg.update(every_s=float(args[5]), reply_timeout_s=float(args[6]))
    Device(cfg).run(cycles)


main()
