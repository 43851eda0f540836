"""The fog agent: takes tasks from MQTT, runs them, replies, announces presence."""
