"""The HTTP API in-process (aiohttp test server on 127.0.0.1), and mauthctl's client against it."""

from __future__ import annotations

from mauthserver.api import ROUTES
from mauthserver.openapi import spec


def test_openapi_describes_exactly_the_routes():
    described = {(method.upper(), path) for path, item in spec()["paths"].items()
                 for method in item if method != "parameters"}
    assert described == {(method, path) for method, path, _ in ROUTES}
