"""The controller/runner bus: the NATS bridge, the embedded nats-server, subjects and message formats.

* The bridge: `nats_transport` (the Trio side: `NatsTransport`, `open_nats_transport`,
  `connect_nats_transport`), `nats_loop` (nats-py on its own asyncio thread), `handoff` (what
  crosses between the two, in batches), `nats_checks` (subject/header/size checks) and
  `nats_errors` (failure classification, TLS context).
* The embedded server: `server` (the supervised nats-server process, and the front door for the
  names below), `server_options`, `server_config`, `server_binary`, `server_errors`.
* `protocol` (subjects, headers, message formats) and `nkeys_util` (NKeys seeds and public keys).
"""
