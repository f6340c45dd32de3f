"""The websocket sink's parts, one job each (the sink itself is :mod:`bridge.sinks.websocket`).

- :mod:`.server` — event loop thread, handshake, token, writing each client's batches;
- :mod:`.fanout` — sans-I/O: records → per-client batches, newest step wins, dropped counts;
- :mod:`.incoming` — sans-I/O: control messages in, one status or error answer each;
- :mod:`.static` — the browser viewer's files over HTTP on the same port.
"""
