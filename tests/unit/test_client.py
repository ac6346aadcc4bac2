"""The operator's API client against a real HTTP server on loopback playing the apiserver's part: a token
file read again after a 401, Retry-After honoured on a 429, idempotent requests retried after a dropped
connection (and a create never), answers past the size cap refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mlops_operator.controller import client
from mlops_operator.controller.client import CONFIGMAPS, Api, ApiError


@contextlib.asynccontextmanager
async def apiserver(handler: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_a_401_reads_the_token_file_again_and_retries(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old\n")
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer new":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"metadata": {"name": "x"}})

    async def run() -> tuple[Any, Any]:
        async with apiserver(handler) as url:
            api = Api(url, token="old", token_path=str(token), insecure=True)
            try:
                with pytest.raises(ApiError) as refused:  # the file still holds the revoked token
                    await api.get(CONFIGMAPS, "ns", "x")
                token.write_text("new\n")  # the kubelet rotated it
                return refused.value.status, await api.get(CONFIGMAPS, "ns", "x")
            finally:
                await api.close()

    status, found = asyncio.run(run())
    assert status == 401 and found == {"metadata": {"name": "x"}}
    assert seen == ["Bearer old", "Bearer old", "Bearer old", "Bearer new"]


def test_a_429_is_retried_when_retry_after_says() -> None:
    answered: list[float] = []

    async def handler(_: web.Request) -> web.Response:
        answered.append(time.monotonic())
        if len(answered) == 1:
            return web.json_response({"message": "Too many requests"}, status=429, headers={"Retry-After": "1"})
        return web.json_response({"items": []})

    async def run() -> Any:
        async with apiserver(handler) as url:
            api = Api(url, insecure=True)
            try:
                return await api.list(CONFIGMAPS, "ns")
            finally:
                await api.close()

    assert asyncio.run(run()) == {"items": []}
    assert len(answered) == 2 and answered[1] - answered[0] >= 0.95


def test_a_dropped_connection_retries_a_get_and_never_a_create() -> None:
    calls: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.method)
        if len(calls) in (1, 3):  # the first GET and the first POST: the connection drops, no answer
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        return web.json_response({"metadata": {"name": "x"}})

    async def run() -> tuple[Any, str]:
        async with apiserver(handler) as url:
            api = Api(url, insecure=True)
            try:
                got = await api.get(CONFIGMAPS, "ns", "x")
                try:
                    await api.create(CONFIGMAPS, "ns", {"metadata": {"name": "y"}})
                except Exception as exc:  # a create that may have happened is the caller's to decide
                    return got, type(exc).__name__
                return got, "created"
            finally:
                await api.close()

    got, create = asyncio.run(run())
    assert got == {"metadata": {"name": "x"}} and calls[:3] == ["GET", "GET", "POST"]
    assert create != "created" and len(calls) == 3


def test_an_answer_past_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_RESPONSE_BYTES", 1000)

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=json.dumps({"items": ["x" * 2000]}), content_type="application/json")

    async def run() -> None:
        async with apiserver(handler) as url:
            api = Api(url, insecure=True)
            try:
                await api.list(CONFIGMAPS, "ns")
            finally:
                await api.close()

    with pytest.raises(ValueError, match="more than the 1000"):
        asyncio.run(run())


def test_a_watch_stream_cut_anywhere_gives_its_events_whole_and_exact() -> None:
    # what the apiserver sends: integers to int64 (its decoder's limit: beyond it they come back as floats),
    # floats, text in any script
    events = [{"type": "ADDED", "object": {"metadata": {"name": f"m{i}"}, "spec": {
        "params": {"n": 2 ** 63 - 1 - i, "m": -2 ** 63 + i, "big": 1.1805916207174113e+21, "x": 0.1 + i},
        "note": "é ✓ 模型"}}} for i in range(3)] + [{"type": "MODIFIED", "object": {"metadata": {"name": "m0"}}}]
    wire = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for start in range(0, len(wire), 7):  # cut mid-event, mid-character
            await resp.write(wire[start:start + 7])
            await asyncio.sleep(0)
        return resp

    async def run() -> list[Any]:
        async with apiserver(handler) as url:
            api = Api(url, insecure=True)
            try:
                return [e async for e in api.stream("/api/v1/namespaces/ns/configmaps", {"watch": "1"}, 10)]
            finally:
                await api.close()

    got = asyncio.run(run())
    assert got == events and [type(e["object"].get("spec", {}).get("params", {}).get("n")) for e in got] == \
        [int, int, int, type(None)]


def test_a_body_is_sent_exactly_whatever_the_encoder() -> None:
    # a user's integer past 64 bits (orjson refuses it) goes out as the standard encoder writes it
    for body in ({"spec": {"n": 2 ** 70, "s": "é"}}, {"status": {"x": 0.1, "n": 2 ** 63 - 1}}):
        assert json.loads(client.encode(body)) == body


def test_the_operator_process_logs_in_without_the_kubernetes_client(tmp_path: Path) -> None:
    """`mlops run` keeps the official client (and its thousand modules) out of the process before kopf loads; kopf's
    own kubeconfig login, which the operator's login handler uses, still gives the server and the token."""
    import subprocess
    import sys

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t0k3n"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    code = """
import json, sys
from mlops_operator.cli import _without_kubernetes_client
_without_kubernetes_client()
import kopf
from mlops_operator import main
info, token_file = main._credentials(kopf.OperatorSettings())
loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "kubernetes" and v is not None)
print(json.dumps({"server": info.server, "token": info.token, "loaded": loaded}))
"""
    env = {"KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "operator"),
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"server": "https://127.0.0.1:6443", "token": "t0k3n",
                                                        "loaded": []}
