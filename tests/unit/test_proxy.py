"""The dev proxy's choice of backend: HTTPRoute weights exactly, a pod of a Service at random (as kube-proxy),
none for an empty Service."""

from __future__ import annotations

import collections
import random

import pytest

from mlops_operator.dev.proxy import Backend, choose, parse_target


def pods(revision: str, n: int) -> list[Backend]:
    return [Backend(f"127.1.0.{i}", 8080, f"{revision}-{i}", revision) for i in range(n)]


def test_weights_are_honoured_exactly_and_pods_share_the_rest() -> None:
    groups = [(90, pods("stable", 2)), (10, pods("canary", 1))]
    pick = random.Random(3)
    picked = [choose(groups, n, pick) for n in range(1000)]
    assert all(b is not None for b in picked)
    by_revision = collections.Counter(b.revision for b in picked if b)
    assert by_revision == {"stable": 900, "canary": 100}
    by_pod = collections.Counter(b.pod for b in picked if b and b.revision == "stable")
    assert set(by_pod) == {"stable-0", "stable-1"} and min(by_pod.values()) > 350, by_pod


def test_a_client_alternating_two_calls_reaches_every_pod_with_each() -> None:
    """Inference then feedback, again and again, through one Service selecting two revisions' pods (a canary
    by replica ratio): the inference calls alone reach both."""
    pick = random.Random(5)
    inference = [choose([(1, pods("any", 2))], n, pick) for n in range(0, 400, 2)]
    assert {b.pod for b in inference if b} == {"any-0", "any-1"}


def test_a_service_without_ready_pods_or_weight_gets_nothing() -> None:
    assert {choose([(50, pods("a", 1)), (50, [])], n).revision for n in range(10)} == {"a"}  # type: ignore[union-attr]
    assert {choose([(0, pods("a", 1)), (1, pods("b", 3))], n).revision for n in range(10)} == {"b"}  # type: ignore[union-attr]
    assert choose([(100, [])], 0) is None
    assert choose([], 3) is None


def test_targets_name_a_service() -> None:
    assert parse_target("svc/iris") == parse_target("service/iris") == parse_target("iris") == "iris"
    with pytest.raises(ValueError, match="forwards to a Service"):
        parse_target("deploy/iris")


def test_a_pod_that_stopped_accepting_is_retried_on_a_fresh_lookup() -> None:
    """A Pod refusing connections (SIGTERM) before the next lookup drops it: the request, never sent, goes to a
    Pod of a fresh lookup instead of failing."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mlops_operator.dev.proxy import Proxy

    class Live(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    live = ThreadingHTTPServer(("127.0.0.1", 0), Live)
    threading.Thread(target=live.serve_forever, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = s.getsockname()[1]  # closed: connections to it are refused

    class Lookups:
        service, namespace, api_client = "iris", "ns", None

        def __init__(self) -> None:
            self.fresh = False

        def invalidate(self) -> None:
            self.fresh = True

        def groups(self) -> list[tuple[int, list[Backend]]]:
            port = live.server_address[1] if self.fresh else gone
            return [(1, [Backend("127.0.0.1", int(port), "p", "rev")])]

        def mirror(self) -> None:
            return None

    proxy = Proxy(Lookups())  # type: ignore[arg-type]
    try:
        status, _, payload = proxy.forward("GET", "/v2/health/ready", None, {})
        assert (status, payload) == (200, b"ok")
    finally:
        proxy.server.server_close()
        live.shutdown()


def test_a_routes_request_mirror_copies_requests_and_discards_the_answers() -> None:
    """A rule's RequestMirror filter: each request is answered by the route's backend, and its copy goes to the
    mirror's, whose answer nobody sees (the dev proxy as the Gateway of a shadow rollout)."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mlops_operator.dev.proxy import Proxy

    seen: dict[str, list[bytes]] = {"main": [], "shadow": []}

    def server(name: str) -> ThreadingHTTPServer:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                seen[name].append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", str(len(name)))
                self.end_headers()
                self.wfile.write(name.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        s = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        return s

    main, shadow = server("main"), server("shadow")

    class Lookups:
        service, namespace, api_client = "iris", "ns", None
        percent = 100.0

        def invalidate(self) -> None:
            pass

        def groups(self) -> list[tuple[int, list[Backend]]]:
            return [(1, [Backend("127.0.0.1", main.server_address[1], "p", "stable")])]

        def mirror(self) -> tuple[float, list[Backend]]:
            return self.percent, [Backend("127.0.0.1", shadow.server_address[1], "q", "candidate")]

    lookups = Lookups()
    proxy = Proxy(lookups)  # type: ignore[arg-type]
    try:
        for i in range(20):
            status, headers, payload = proxy.forward("POST", "/v2/models/iris/infer", b"%d" % i, {})
            assert (status, payload) == (200, b"main") and ("x-mlops-revision", "stable") in headers

        def copies(n: int) -> list[bytes]:
            deadline = time.monotonic() + 10
            while len(seen["shadow"]) < n and time.monotonic() < deadline:
                time.sleep(0.02)
            return sorted(seen["shadow"])

        assert copies(20) == sorted(seen["main"]) == sorted(b"%d" % i for i in range(20))
        lookups.percent = 0.0  # none copied, then one marker copied: the shadow saw the marker only
        for _ in range(10):
            proxy.forward("POST", "/v2/models/iris/infer", b"unseen", {})
        lookups.percent = 100.0
        proxy.forward("POST", "/v2/models/iris/infer", b"marker", {})
        assert b"marker" in copies(21) and b"unseen" not in seen["shadow"] and len(seen["main"]) == 31
        assert proxy.mirror_dropped == 0
    finally:
        proxy.server.server_close()
        main.shutdown()
        shadow.shutdown()
