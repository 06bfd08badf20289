"""mauthserver: the mediator between the administrator and the routers (docs/design.md, "The three programs").

Pure parts: `core` (commands, authorize, the per-router reconciler). Shells:
`store` (SQLite), `service` (the mediator gluing store, directory, fleet and
events), `fanout` (router I/O), `sapl` (SAP sockets), `api` (HTTP + SSE),
`fleet_backend` (the router protocol served for the fleet), `daemon` and `cli`.
"""
