"""The loopback tier: real sockets on the loopback interface, and child processes; no root.

The tests here run mauth's real network code against itself on 127.0.0.1 and
::1: the router protocol over UDP (client, server core, mauthserver's
fan-out), mauthserver's HTTP API and event stream with mauthctl and the
dashboard as its clients (tests/support/loopback_fleet.py), the Prometheus
endpoints, the daemons' start-up; and `make install` into a temporary tree
with `systemd-analyze verify` over it. Nothing leaves the machine, nothing
needs root, XDP or a network namespace (that is tests/integration).
Everything that needs neither sockets nor processes is in tests/unit, which
refuses them.
"""
