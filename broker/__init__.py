"""The brokers fogmesh runs on and the tools around them: the embedded amqtt
broker with shared subscriptions (``embedded``, ``shared``), mosquitto's
launcher and configs (``mosquitto``), a secured site's certificates,
passwords and ACLs (``secure``), and the brokers the tests also prove it on
(``aedes``, ``rabbitmq``); ``ports`` and ``processes`` start and stop them."""
