"""The controller/runner bus: the nats-server process, the NATS bridge, subjects and message formats."""
