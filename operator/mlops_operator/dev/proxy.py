"""`mlops dev proxy svc/NAME`: a Service's traffic on the host's loopback, for the dev cluster.

The dev cluster's Pods live in its own network namespace and no Gateway implementation runs there. This
proxy listens on 127.0.0.1 and, from inside the namespace, does what a Gateway would: each request goes to
a ready Pod the Service selects; when an
HTTPRoute has the Service among its backends, requests are spread over that rule's backends by
their weights first, so traffic really moves when a canary steps or a rollout promotes, and the rule's
RequestMirror filter copies its share of them to its backend (answers discarded: a shadow rollout). What it
forwards to is looked up again every second. Each answer says which Pod and revision served it
(`x-mlops-pod`, `x-mlops-revision`). With `via_api` it reaches the Pods through the apiserver's
pod proxy instead, for a cluster whose pod IPs this machine cannot reach (kind).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import queue
import random
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSIONS = ("v1", "v1beta1", "v1alpha2")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
              "host", "content-length"}


@dataclass(frozen=True)
class Backend:
    host: str
    port: int
    pod: str
    revision: str


Group = tuple[int, Sequence[Backend]]  # (weight, the ready pods of one Service)
Mirror = tuple[float, Sequence[Backend]]  # (percent, the ready pods of the Service a RequestMirror filter names)
MIRROR_QUEUE, MIRROR_WORKERS = 256, 4
_PICK = random.Random()  # spreads requests over pods (not a secret)


def choose(groups: Sequence[Group], n: int, pick: random.Random = _PICK) -> Backend | None:
    """The backend of the n-th request: Services in proportion to their weights (exactly, over each
    run of sum-of-weights requests; a Service with no ready pod gets none), a pod of it at random, as
    kube-proxy picks one (taking pods in turn would send every other request to the same pod: a client
    alternating inference and feedback calls would only ever reach one pod of a Service)."""
    live = [(w, pods) for w, pods in groups if w > 0 and pods]
    total = sum(w for w, _ in live)
    if total == 0:
        return None
    slot = n % total
    for weight, pods in live:
        if slot < weight:
            return pods[pick.randrange(len(pods))]
        slot -= weight
    raise AssertionError("unreachable")


def _ready(pod: Any) -> bool:
    return bool(pod.status and pod.status.pod_ip and not pod.metadata.deletion_timestamp and
                any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ()))


def _container_port(pod: Any, target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod.spec.containers:
        for port in container.ports or ():
            if port.name == target:
                return int(port.container_port)
    return None


class Resolver:
    """Where a Service's requests go now (looked up at most once per `ttl` seconds)."""

    def __init__(self, api_client: Any, namespace: str, service: str, ttl: float = 1.0,
                 port_name: str | None = None) -> None:
        self.api_client = api_client
        self.port_name = port_name  # the Service port to forward to by name (grpc), else the route's or the first
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace, self.service, self.ttl = namespace, service, ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Group], Mirror | None] | None = None
        self._route_version: str | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _current(self) -> tuple[float, list[Group], Mirror | None]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.ttl:
                self._cached = (time.monotonic(), *self._lookup())
            return self._cached

    def groups(self) -> list[Group]:
        return self._current()[1]

    def mirror(self) -> Mirror | None:
        """Where the matched rule's RequestMirror filter copies requests to, and what share of them."""
        return self._current()[2]

    def _lookup(self) -> tuple[list[Group], Mirror | None]:
        for route in self._routes():
            for rule in (route.get("spec") or {}).get("rules") or ():
                refs = [r for r in rule.get("backendRefs") or () if r.get("kind", "Service") == "Service"
                        and r.get("namespace", self.namespace) == self.namespace]
                if any(r.get("name") == self.service for r in refs):
                    return [(int(r.get("weight", 1)), self._pods(r["name"], r.get("port"))) for r in refs], \
                        self._mirror_of(rule)
        return [(1, self._pods(self.service, None))], None

    def _mirror_of(self, rule: dict[str, Any]) -> Mirror | None:
        """A rule's RequestMirror filter (`percent`, or `fraction`, of GEP-3171; all requests without either)."""
        for f in rule.get("filters") or ():
            if f.get("type") != "RequestMirror":
                continue
            mirror = f.get("requestMirror") or {}
            ref = mirror.get("backendRef") or {}
            fraction = mirror.get("fraction") or {}
            percent = float(mirror["percent"]) if "percent" in mirror else \
                100.0 * int(fraction.get("numerator", 1)) / int(fraction.get("denominator", 100)) if fraction else 100.0
            return percent, self._pods(ref.get("name", ""), ref.get("port"))
        return None

    def _routes(self) -> list[dict[str, Any]]:
        for version in ([self._route_version] if self._route_version else GATEWAY_VERSIONS):
            try:
                found = self.custom.list_namespaced_custom_object(GATEWAY_GROUP, version, self.namespace,
                                                                  "httproutes")
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            self._route_version = version
            return list(found.get("items") or ())
        return []

    def _pods(self, name: str, port: int | None) -> list[Backend]:
        try:
            svc = self.core.read_namespaced_service(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        selector = svc.spec.selector or {}
        if not selector:
            return []
        ports = svc.spec.ports or []
        if self.port_name is not None:
            chosen = next((p for p in ports if p.name == self.port_name), None)
        else:
            chosen = next((p for p in ports if port is None or p.port == port), None)
        if chosen is None:
            return []
        target = chosen.target_port if chosen.target_port is not None else chosen.port
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items()))).items
        out = []
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            number = _container_port(pod, target) if _ready(pod) else None
            if number is not None:
                out.append(Backend(pod.status.pod_ip, number, pod.metadata.name,
                                   (pod.metadata.labels or {}).get("mlops.dev/revision", "")))
        return out


class Proxy:
    """An HTTP server on loopback forwarding to what a `Resolver` says."""

    def __init__(self, resolver: Resolver, port: int = 0, host: str = "127.0.0.1", via_api: bool = False) -> None:
        self.resolver, self.via_api = resolver, via_api
        self._counter = itertools.count()
        self._count_lock = threading.Lock()
        self._mirrored: queue.Queue[tuple[Backend, str, str, bytes | None, dict[str, str]]] = queue.Queue(MIRROR_QUEUE)
        self._mirror_threads: list[threading.Thread] = []
        self.mirror_dropped = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status, headers, payload = proxy.forward(self.command, self.path, body, {
                    k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP})
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def forward(self, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._count_lock:
            n = next(self._counter)
        backend = choose(self.resolver.groups(), n)
        if backend is None:
            message = {"error": f"no ready pod behind svc/{self.resolver.service} in {self.resolver.namespace}"}
            return 503, [("Content-Type", "application/json")], json.dumps(message).encode()
        send = self._through_api if self.via_api else self._direct
        try:
            try:
                status, out, payload = send(backend, method, path, body, headers)
            except ConnectionRefusedError:
                # a Pod that stopped accepting (SIGTERM) before the next lookup dropped it: nothing was sent, so
                # the request goes to a Pod of the fresh lookup, as a Gateway retries a connect failure
                self.resolver.invalidate()
                backend = choose(self.resolver.groups(), n) or backend
                status, out, payload = send(backend, method, path, body, headers)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            self.resolver.invalidate()  # that pod went away: look again
            message = {"error": f"pod {backend.pod} did not answer: {exc}"}
            return 502, [("Content-Type", "application/json")], json.dumps(message).encode()
        out = [(k, v) for k, v in out if k.lower() not in HOP_BY_HOP]
        self._mirror(method, path, body, headers)
        return status, [*out, ("x-mlops-pod", backend.pod), ("x-mlops-revision", backend.revision)], payload

    def _mirror(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> None:
        """A copy of the request for the route's RequestMirror backend, if it has one: sent by other threads, its
        answer discarded, as a Gateway does (a full queue drops the copy)."""
        mirror = self.resolver.mirror()
        if mirror is None or not mirror[1] or _PICK.random() * 100 >= mirror[0]:
            return
        if not self._mirror_threads:
            self._mirror_threads = [threading.Thread(target=self._send_mirrored, daemon=True, name="mirror")
                                    for _ in range(MIRROR_WORKERS)]
            for t in self._mirror_threads:
                t.start()
        pods = mirror[1]
        try:
            self._mirrored.put_nowait((pods[_PICK.randrange(len(pods))], method, path, body, headers))
        except queue.Full:
            self.mirror_dropped += 1

    def _send_mirrored(self) -> None:
        send = self._through_api if self.via_api else self._direct
        while True:
            backend, method, path, body, headers = self._mirrored.get()
            with contextlib.suppress(OSError, urllib3.exceptions.HTTPError):
                send(backend, method, path, body, headers)

    @staticmethod
    def _direct(backend: Backend, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(backend.host, backend.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _through_api(self, backend: Backend, method: str, path: str, body: bytes | None,
                     headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Through the apiserver's pod proxy (`pods/NAME:PORT/proxy`): for clusters whose pod IPs
        this machine cannot reach (kind, a remote cluster), with the kubeconfig's credentials."""
        api = self.resolver.api_client
        conf = api.configuration
        auth = conf.get_api_key_with_prefix("authorization")
        url = f"{conf.host}/api/v1/namespaces/{self.resolver.namespace}/pods/{backend.pod}:{backend.port}/proxy{path}"
        resp = api.rest_client.pool_manager.request(
            method, url, body=body, headers={**headers, **({"Authorization": auth} if auth else {})},
            timeout=30, retries=False)
        return resp.status, list(resp.headers.items()), resp.data

    def start(self) -> Proxy:
        self._thread = threading.Thread(target=self.server.serve_forever, name="mlops-dev-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class TcpForwarder:
    """Whole connections to what a `Resolver` says (gRPC's HTTP/2 among them): each new connection goes to
    the next backend by the same weights as the HTTP proxy, and its bytes are copied both ways."""

    def __init__(self, resolver: Resolver, port: int = 0, host: str = "127.0.0.1") -> None:
        self.resolver = resolver
        self.listener = socket.create_server((host, port))
        self.address = f"{host}:{self.listener.getsockname()[1]}"
        self._counter = itertools.count()
        self._stopping = threading.Event()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _serve(self, conn: socket.socket) -> None:
        backend = choose(self.resolver.groups(), next(self._counter))
        if backend is None:
            conn.close()
            return
        try:
            upstream = socket.create_connection((backend.host, backend.port), timeout=10)
        except OSError:
            self.resolver.invalidate()
            conn.close()
            return
        upstream.settimeout(None)
        back = threading.Thread(target=self._pump, args=(upstream, conn), daemon=True)
        back.start()
        self._pump(conn, upstream)
        back.join()
        conn.close()
        upstream.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def start(self) -> TcpForwarder:
        threading.Thread(target=self._accept, name="mlops-dev-tcp-forwarder", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.listener.close()


def parse_target(target: str) -> str:
    """`svc/NAME`, `service/NAME`, `services/NAME` or just NAME → NAME."""
    kind, _, name = target.partition("/")
    if not name:
        return kind
    if kind not in ("svc", "service", "services"):
        raise ValueError(f"{target}: the proxy forwards to a Service (svc/NAME)")
    return name
