"""What the operator reads besides the apiserver: only allowed endpoints, only bounded answers
(controller/endpoints.py), checked against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from mlops_operator.controller.endpoints import MAX_ANSWER_BYTES, Endpoints, apiserver_addresses, get_json


def test_the_default_allows_cluster_services_only() -> None:
    rules = Endpoints.parse("")
    assert rules.refusal("http://prometheus.monitoring.svc:9090") is None
    assert rules.refusal("https://prometheus.monitoring.svc.cluster.local/") is None
    for url, why in [("http://169.254.169.254/latest/meta-data", "allowed networks"),
                     ("http://127.0.0.1:9090", "allowed networks"),
                     ("http://[::1]:9090", "allowed networks"),
                     ("http://metadata.google.internal/", "matches none"),
                     ("http://prometheus.example.com/", "matches none"),
                     ("file:///etc/passwd", "only http")]:
        assert why in (rules.refusal(url) or ""), url


def test_cidrs_allow_literal_addresses_but_never_the_apiserver() -> None:
    rules = Endpoints.parse("10.0.0.0/8, 127.0.0.1/32, prometheus.example.com",
                            apiserver=apiserver_addresses("https://127.0.0.1:6443"))
    assert rules.refusal("http://10.1.2.3:9090") is None
    assert rules.refusal("http://127.0.0.1:9090") is None
    assert "apiserver" in (rules.refusal("https://127.0.0.1:6443/api/v1/query") or "")
    assert rules.refusal("https://prometheus.example.com/") is None
    assert "allowed networks" in (rules.refusal("http://169.254.169.254/") or "")
    with pytest.raises(ValueError, match="neither a host pattern nor a CIDR"):
        Endpoints.parse("http://prometheus/")


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[int]:
    async def small(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"[" + b"0," * MAX_ANSWER_BYTES + b"0]", content_type="application/json")

    async def huge_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"[")
        for _ in range(MAX_ANSWER_BYTES // 65536 + 2):
            await resp.write(b"0," * 32768)
        await resp.write(b"0]")
        return resp

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/small")

    app = web.Application()
    app.add_routes([web.get("/small", small), web.get("/huge", huge), web.get("/chunked", huge_chunked),
                    web.get("/redirect", redirect)])
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port
    await runner.cleanup()


def test_answers_past_the_limit_and_redirects_are_left_out() -> None:
    async def run() -> dict[str, Any]:
        async with server() as port:
            base = f"http://127.0.0.1:{port}"
            return await get_json([("small", f"{base}/small"), ("huge", f"{base}/huge"),
                                   ("chunked", f"{base}/chunked"), ("redirect", f"{base}/redirect")])
    assert asyncio.run(run()) == {"small": {"ok": True}}


def test_a_name_resolving_to_loopback_is_refused_unless_a_cidr_allows_it() -> None:
    async def run() -> list[dict[str, Any]]:
        async with server() as port:
            url = f"http://localhost:{port}/small"
            allowed = Endpoints.parse("localhost,127.0.0.0/8,::1/128")
            # the apiserver's address and port stay refused, whatever the CIDRs say
            apiserver = Endpoints.parse("localhost,127.0.0.0/8,::1/128",
                                        apiserver=apiserver_addresses(f"https://localhost:{port}"))
            return [await get_json([("x", url)], rules) for rules in (Endpoints.parse("localhost"), allowed,
                                                                       apiserver)]
    assert asyncio.run(run()) == [{}, {"x": {"ok": True}}, {}]


def test_an_endpoint_that_never_answers_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers
    try:
        port = silent.getsockname()[1]
        started = time.monotonic()
        found = asyncio.run(get_json([(str(i), f"http://127.0.0.1:{port}/") for i in range(4)], timeout=0.5))
        assert found == {} and time.monotonic() - started < 3
    finally:
        silent.close()
