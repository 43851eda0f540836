"""Fleet deployment: signed bundles of task kinds, pushed over MQTT (see README.md here)."""
