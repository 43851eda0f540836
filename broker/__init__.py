"""Brokers fogmesh runs on: the embedded amqtt broker and a mosquitto launcher."""
