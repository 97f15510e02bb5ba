"""The controller/runner bus: the NATS bridge, the embedded nats-server, subjects and message formats.

* The bridge: `nats_transport` (the Trio side: `NatsTransport`, `open_nats_transport`,
  `connect_nats_transport`), `nats_loop` (nats-py on its own asyncio thread), `handoff` (what
  crosses between the two, in batches), `nats_checks` (subject/header/size checks) and
  `nats_errors` (failure classification, TLS context).
* The embedded server: `server` (the supervised nats-server process, and the front door for the
  names below), `server_options`, `server_config` (config text, run directory), `server_binary`,
  `server_errors`, `server_process` (a child that dies with us, even on SIGKILL), `server_pidfile`
  (stopping a server left from a previous life).
* `local_link`: how the controller reaches its own server over TLS (pinned certificate, ephemeral
  client certificate).
* `protocol` (subjects, headers, message formats) and `nkeys_util` (NKeys seeds and public keys).
"""
