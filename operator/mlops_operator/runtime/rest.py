"""The REST side of the Open Inference Protocol V2, as an RSGI application served by granian.

Two instances share one `Served` model: the **inference** port (8080: what Services and the HTTPRoute
expose; optional bearer tokens and TLS) and the **monitoring** port (8082: reached by pod IP only, by
the operator, the analysis Job and Prometheus). The monitoring port serves everything the inference
port does plus `/v2/models/NAME/monitoring`, `/v2/models/NAME/profile` and `/metrics`; inference calls
on it are replayed validation rows (`mlops analyze`): timed and counted as calls, never counted into
the drift sketches. No client of the inference port can mark its traffic so.

Paths: `/v2/health/{live,ready}`, `/v2`, `/v2/models/NAME[/versions/VERSION]` and its `/ready` and
`/infer` (VERSION: the one the metadata advertises; any other is 404); with capture on (capture.py),
`POST /v2/models/NAME/feedback` takes ground-truth labels `{id: label}` for requests served before; on the
monitoring port, `GET|POST /v2/models/NAME/mirror` reads or sets shadow traffic (mirror.py).
A trailing slash is the same path; HEAD answers as GET; a known path with another method is 405 with
`Allow`. JSON bodies, and the binary tensor extension (`Inference-Header-Content-Length`) both ways.

What the server (granian, on hyper) already enforces, configured by `Limits`: the header-read and
keep-alive idle timeout, the request head size (431 when the head does not fit its 64 KiB buffer, a
long URL included), `Expect: 100-continue`, one answer to an Upgrade request, percent-decoded paths.
The one thin layer here, because granian has no option for it: 414 for a request target past 8 KiB
that fits the head buffer, and the body limits — 413 past
`max_body` (from Content-Length before reading, or while reading a chunked body), a budget of body bytes
held at once across every connection (503 with Retry-After when spent), and a body-read timeout (408)
that gives a stalled upload's memory back.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import generate_latest

from ..api import artifacts
from .capture import CaptureError, check_labels
from .inference import BadRequest, Request, Served, encode_json, parse_json
from .mirror import MirrorError, parse_setting

log = logging.getLogger("mlops.serve")
VERSION = "0.2.0"
JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"
Reply = tuple[int, bytes, list[tuple[str, str]]]


@dataclass
class Limits:
    max_body: int = 16 * 1024 * 1024
    body_budget: int = 64 * 1024 * 1024  # body bytes held at once, over all connections of both ports
    body_timeout: float = 30.0
    header_timeout_ms: int = 10_000  # also the keep-alive idle timeout (hyper's header read timeout)
    max_head: int = 64 * 1024  # request line + headers (granian's HTTP/1 buffer): 431 past it
    max_target: int = 8 * 1024  # the request target (path and query): 414 past it, when the head fits
    max_connections: int = 512
    """Connections served at once per port (granian's backpressure: a permit per accepted connection, held for
    its life, keep-alive idle time included); more wait in the listen backlog until one closes."""


class Faults:
    """Injected faults, to rehearse a rollback: a fraction of answered inference requests turned into
    500s, and a delay added to every inference answer (without blocking the other connections); with
    `live_only`, replayed validation rows are spared (a model that passes its replay and fails live).
    Off by default."""

    def __init__(self, error_rate: float = 0.0, delay_ms: float = 0.0, live_only: bool = False) -> None:
        if not 0.0 <= error_rate <= 1.0 or delay_ms < 0:
            raise ValueError("--inject-error-rate must be within [0, 1] and --inject-delay-ms not negative")
        self.error_rate, self.delay, self.live_only = error_rate, delay_ms / 1000.0, live_only
        self.active = error_rate > 0 or delay_ms > 0
        self.seen = 0

    def apply_to(self, replay: bool) -> bool:
        return self.active and not (self.live_only and replay)

    def error(self) -> bool:
        """Deterministic: exactly floor(n * rate) of the first n requests fail."""
        self.seen += 1
        return int(self.seen * self.error_rate) > int((self.seen - 1) * self.error_rate)


class BodyBudget:
    """Bytes of request bodies held at once, over every connection."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


def bearer_ok(authorization: str, tokens: frozenset[str]) -> bool:
    """Whether an `Authorization` value (HTTP header or gRPC metadata) carries one of the tokens."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.strip(), t) for t in tokens)


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, orjson.dumps({"error": message}), [("content-type", JSON), *(headers or [])]


def _ok(body: Any) -> Reply:
    return 200, orjson.dumps(body), [("content-type", JSON)]


class RestApp:
    """One port's RSGI application."""

    def __init__(self, served: Served, *, monitoring_port: bool, limits: Limits, budget: BodyBudget,
                 tokens: frozenset[str] = frozenset(), faults: Faults | None = None) -> None:
        self.served, self.monitoring_port, self.limits, self.budget = served, monitoring_port, limits, budget
        self.tokens = tokens
        self.faults = faults or Faults()
        name = served.name
        model = f"/v2/models/{name}"
        get: dict[str, Callable[[], Reply]] = {
            "/v2/health/live": lambda: _ok({"live": True}), "/v2/health/ready": self.ready,
            "/v2": self.server_metadata, model: self.model_metadata, f"{model}/ready": self.ready,
        }
        if monitoring_port:
            get |= {f"{model}/monitoring": lambda: _ok(self.served.snapshot()),
                    f"{model}/profile": self.profile, "/metrics": self.metrics}
        self.get = get
        self.infer_paths = {f"{model}/infer"}
        self.feedback_path = f"{model}/feedback"
        self.mirror_path = f"{model}/mirror" if monitoring_port and served.mirror is not None else None
        if self.mirror_path is not None:
            self.get[self.mirror_path] = self.mirror_state
        self.open_paths = {"/v2/health/live", "/v2/health/ready", f"{model}/ready"}  # no token needed
        version = served.model.version if served.model is not None else None
        if version is not None:  # the versioned paths of the one version this server has
            vpath = f"{model}/versions/{version}"
            self.get |= {vpath: self.model_metadata, f"{vpath}/ready": self.ready}
            self.infer_paths.add(f"{vpath}/infer")
            self.open_paths.add(f"{vpath}/ready")
        self.profile_body = (served.model.directory / artifacts.PROFILE_FILE).read_bytes() \
            if served.model is not None and served.model.profile is not None else None

    # -- GET endpoints
    def ready(self) -> Reply:
        if self.served.model is None:
            return 503, orjson.dumps({"ready": False, "error": self.served.problem}), [("content-type", JSON)]
        return _ok({"ready": True, "name": self.served.name})

    def server_metadata(self) -> Reply:
        return _ok({"name": "mlops-serve", "version": VERSION, "extensions": ["binary_tensor_data", "monitoring"]})

    def model_metadata(self) -> Reply:
        if self.served.model is None:
            return error(503, str(self.served.not_ready()))
        return _ok(self.served.model.metadata_response())

    def profile(self) -> Reply:
        if self.profile_body is None:
            return error(404, f"model {self.served.name} has no reference profile")
        return 200, self.profile_body, [("content-type", JSON)]

    def metrics(self) -> Reply:
        return 200, generate_latest(self.served.monitor.registry), [("content-type",
                                                                     "text/plain; version=0.0.4; charset=utf-8")]

    def mirror_state(self) -> Reply:
        assert self.served.mirror is not None
        return _ok(self.served.mirror.state())

    # -- routing
    def _route_error(self, method: str, path: str) -> Reply:
        if path == self.mirror_path:
            return error(405, f"{method} is not allowed on {path}", [("allow", "GET, HEAD, POST")])
        if path in self.get or path in self.infer_paths or path == self.feedback_path:
            allow = "GET, HEAD" if path in self.get else "POST"
            return error(405, f"{method} is not allowed on {path}", [("allow", allow)])
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/"):].split("/")
            if rest[0] != self.served.name:
                return error(404, f"unknown model {rest[0]!r}: this server serves {self.served.name!r}")
            if len(rest) >= 3 and rest[1] == "versions":
                have = self.served.model.version if self.served.model is not None else "none (not ready)"
                return error(404, f"model {self.served.name} has no version {rest[2]!r}: it serves {have}")
        return error(404, f"no such endpoint: {method} {path}")

    def _authorized(self, headers: Any, path: str) -> bool:
        if not self.tokens or self.monitoring_port or path in self.open_paths:
            return True
        return bearer_ok(headers.get("authorization") or "", self.tokens)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        started = time.perf_counter()
        method = scope.method
        path = scope.path
        if len(path) + len(scope.query_string) > self.limits.max_target:
            status, body, headers = error(414, f"the request target is longer than {self.limits.max_target} bytes")
            protocol.response_bytes(status, headers, body)
            return
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        infer = path in self.infer_paths
        if not self._authorized(scope.headers, path):
            status, body, headers = error(401, "a bearer token is required (Authorization: Bearer …)",
                                          [("www-authenticate", 'Bearer realm="mlops-serve"')])
        elif method in ("GET", "HEAD") and path in self.get:
            status, body, headers = self.get[path]()
        elif method == "POST" and infer:
            status, body, headers = await self._infer(scope, protocol)
        elif method == "POST" and path == self.feedback_path:
            status, body, headers = await self._feedback(scope, protocol)
        elif method == "POST" and path == self.mirror_path:
            status, body, headers = await self._configure_mirror(scope, protocol)
        else:
            status, body, headers = self._route_error(method, path)
        if infer and self.faults.active and status < 400 and self.faults.apply_to(self.monitoring_port):
            if self.faults.error_rate and self.faults.error():
                status, body, headers = error(500, "injected fault (--inject-error-rate)")
            if self.faults.delay:
                await asyncio.sleep(self.faults.delay)
        protocol.response_bytes(status, headers, body)  # hyper sends no body to HEAD, but its length
        if infer and method == "POST":
            self.served.monitor.observe(time.perf_counter() - started, status)

    async def _read_body(self, scope: Any, protocol: Any) -> bytes | Reply:
        limit = self.limits.max_body
        length_text = scope.headers.get("content-length")
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                return error(400, f"Content-Length {length_text!r} is not a number")
            if length > limit:
                return error(413, f"the body is {length} bytes; at most {limit} (--max-body-bytes)")
            if not self.budget.take(length):
                return error(503, "too many request bodies are being received at once; retry shortly",
                             [("retry-after", "1")])
            try:
                async with asyncio.timeout(self.limits.body_timeout):  # a timer, not a task as wait_for makes
                    return await protocol()  # type: ignore[no-any-return]
            except TimeoutError:
                return error(408, f"the body did not arrive within {self.limits.body_timeout:g} s")
            finally:
                self.budget.give(length)
        chunks: list[bytes] = []
        held = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                async for chunk in protocol:
                    held += len(chunk)
                    if held > limit:
                        return error(413, f"the body is more than {limit} bytes (--max-body-bytes)")
                    if not self.budget.take(len(chunk)):
                        held -= len(chunk)
                        return error(503, "too many request bodies are being received at once; retry shortly",
                                     [("retry-after", "1")])
                    chunks.append(chunk)
        except TimeoutError:
            return error(408, f"the body did not arrive within {self.limits.body_timeout:g} s")
        finally:
            self.budget.give(held)
        return b"".join(chunks)

    async def _infer(self, scope: Any, protocol: Any) -> Reply:
        body = await self._read_body(scope, protocol)
        if isinstance(body, tuple):
            return body
        try:
            header = scope.headers.get(HEADER_LENGTH)
            try:
                header_length = None if header is None else int(header)
            except ValueError:
                raise BadRequest(f"Inference-Header-Content-Length {header!r} is not a number") from None
            request: Request = parse_json(body, header_length)
            model, outputs = await self.served.infer_batched(request, replay=self.monitoring_port)
            out, head_length = encode_json(model, request, outputs)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except Exception:  # a bug must not take the server down: log it, answer 500, keep serving
            log.exception("error answering an inference request")
            return error(500, "internal error (see the server log)")
        if head_length is None:
            return 200, out, [("content-type", JSON)]
        return 200, out, [("content-type", BINARY), (HEADER_LENGTH, str(head_length))]

    async def _configure_mirror(self, scope: Any, protocol: Any) -> Reply:
        """Shadow traffic on or off (the monitoring port only; the target is always the preview Service)."""
        mirror = self.served.mirror
        assert mirror is not None
        body = await self._read_body(scope, protocol)
        if isinstance(body, tuple):
            return body
        try:
            setting = parse_setting(orjson.loads(body), time.time())
        except orjson.JSONDecodeError as exc:
            return error(400, f"the body is not valid JSON: {exc}")
        except MirrorError as exc:
            return error(400, str(exc))
        if self.served.model is None and setting.percent > 0:
            return error(503, str(self.served.not_ready()))
        mirror.configure(setting)
        return _ok(mirror.state())

    async def _feedback(self, scope: Any, protocol: Any) -> Reply:
        """Ground truth for requests served before: `{id: label}`, appended to the capture's labels."""
        capture = self.served.capture
        if capture is None:
            return error(404, f"model {self.served.name} does not capture its predictions (spec.capture): "
                              "feedback has nowhere to go")
        body = await self._read_body(scope, protocol)
        if isinstance(body, tuple):
            return body
        try:
            labels = check_labels(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            return error(400, f"the body is not valid JSON: {exc}")
        except CaptureError as exc:
            return error(400, str(exc))
        if not capture.feedback(labels):
            return error(503, "the capture queue is full; retry shortly", [("retry-after", "1")])
        return _ok({"accepted": len(labels)})
