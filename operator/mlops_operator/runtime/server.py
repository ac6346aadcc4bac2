"""`mlops serve`: an Open Inference Protocol V2 (REST) server with built-in drift sketches.

    mlops serve --model-dir DIR --name NAME [--digest sha256:…] [--host H] [--port 8080]

Endpoints: /v2/health/live, /v2/health/ready, /v2, /v2/models/NAME, /v2/models/NAME/ready,
/v2/models/NAME/infer, /v2/models/NAME/monitoring (cumulative counters and sketches),
/v2/models/NAME/profile (the reference profile), /metrics (Prometheus text).

The HTTP layer is a small HTTP/1.1 server on asyncio with httptools' parser (uvloop when
installed): a request is parsed, predicted and answered in one pass of the event loop, with no
framework in between. A digest mismatch, or a model that cannot be loaded, leaves the server
live but not ready, with the reason in the log and in the ready endpoints. SIGTERM stops
accepting connections, lets requests in flight finish, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httptools
import orjson

from . import artifacts
from .inference import BadRequest, LoadedModel, Monitor, decode, encode, predict

log = logging.getLogger("mlops.serve")
VERSION = "0.1.0"
JSON = b"application/json"
TEXT = b"text/plain; version=0.0.4; charset=utf-8"


class Faults:
    """Injected faults, to rehearse a rollback: a fraction of answered inference requests turned into
    500s, and a delay added to every inference answer (without blocking the other connections); with
    `live_only`, replayed validation rows are spared (a model that passes its replay and fails live).
    Off by default."""

    def __init__(self, error_rate: float = 0.0, delay_ms: float = 0.0, live_only: bool = False) -> None:
        if not 0.0 <= error_rate <= 1.0 or delay_ms < 0:
            raise ValueError("--inject-error-rate must be within [0, 1] and --inject-delay-ms not negative")
        self.error_rate, self.delay, self.live_only = error_rate, delay_ms / 1000.0, live_only
        self.seen = 0

    def apply_to(self, replay: bool) -> bool:
        return (self.error_rate > 0 or self.delay > 0) and not (self.live_only and replay)

    def error(self) -> bool:
        """Deterministic: exactly floor(n * rate) of the first n requests fail."""
        self.seen += 1
        return int(self.seen * self.error_rate) > int((self.seen - 1) * self.error_rate)


class App:
    """Routing and state: the model (or why there is none), the monitor, the limits."""

    def __init__(self, name: str, model: LoadedModel | None, problem: str | None, max_body: int,
                 monitoring: bool = True, faults: Faults | None = None) -> None:
        self.name = name
        self.faults = faults or Faults()
        self.last_replay = False  # whether the last answered inference was a replayed validation row
        self.model = model
        self.problem = problem
        self.max_body = max_body
        self.monitor = Monitor(model, enabled=monitoring)
        self.profile_body = (model.directory / artifacts.PROFILE_FILE).read_bytes() \
            if model is not None and model.profile is not None else None
        prefix = f"/v2/models/{name}"
        self.routes = {
            ("GET", "/v2/health/live"): self.live, ("GET", "/v2/health/ready"): self.ready,
            ("GET", "/v2"): self.server_metadata, ("GET", prefix): self.model_metadata,
            ("GET", prefix + "/ready"): self.ready, ("POST", prefix + "/infer"): self.infer,
            ("GET", prefix + "/monitoring"): self.monitoring, ("GET", prefix + "/profile"): self.profile,
            ("GET", "/metrics"): self.metrics,
        }
        self.paths = {p for _, p in self.routes}

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        route = self.routes.get((method, path))
        if route is None:
            if path in self.paths:
                return _error(405, f"{method} is not allowed on {path}")
            if path.startswith("/v2/models/"):
                model = path[len("/v2/models/"):].split("/", 1)[0]
                if model != self.name:
                    return _error(404, f"unknown model {model!r}: this server serves {self.name!r}")
            return _error(404, f"no such endpoint: {method} {path}")
        return route(body)

    def live(self, _: bytes) -> tuple[int, bytes, bytes]:
        return 200, orjson.dumps({"live": True}), JSON

    def ready(self, _: bytes) -> tuple[int, bytes, bytes]:
        if self.model is None:
            return 503, orjson.dumps({"ready": False, "error": self.problem}), JSON
        return 200, orjson.dumps({"ready": True, "name": self.name}), JSON

    def server_metadata(self, _: bytes) -> tuple[int, bytes, bytes]:
        return 200, orjson.dumps({"name": "mlops-serve", "version": VERSION, "extensions": ["monitoring"]}), JSON

    def model_metadata(self, _: bytes) -> tuple[int, bytes, bytes]:
        if self.model is None:
            return _error(503, f"model {self.name} is not ready: {self.problem}")
        return 200, orjson.dumps(self.model.metadata_response()), JSON

    def infer(self, body: bytes) -> tuple[int, bytes, bytes]:
        if self.model is None:
            return _error(503, f"model {self.name} is not ready: {self.problem}")
        decoded = decode(body, self.model)
        self.last_replay = decoded.replay
        predictions = predict(self.model, decoded)
        self.monitor.count(decoded, predictions)
        return 200, encode(self.model, decoded, predictions), JSON

    def monitoring(self, _: bytes) -> tuple[int, bytes, bytes]:
        return 200, orjson.dumps(self.monitor.snapshot()), JSON

    def profile(self, _: bytes) -> tuple[int, bytes, bytes]:
        if self.profile_body is None:
            return _error(404, f"model {self.name} has no reference profile")
        return 200, self.profile_body, JSON

    def metrics(self, _: bytes) -> tuple[int, bytes, bytes]:
        return 200, self.monitor.prometheus(), TEXT


def _error(status: int, message: str) -> tuple[int, bytes, bytes]:
    return status, orjson.dumps({"error": message}), JSON


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; one request at a time per connection (no pipelining needed)."""

    __slots__ = (
        "app",
        "body",
        "busy",
        "keep_alive",
        "parser",
        "server",
        "size",
        "too_large",
        "transport",
        "url",
    )

    def __init__(self, app: App, server: Server) -> None:
        self.app, self.server = app, server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.keep_alive = True
        self.busy = False

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._respond(400, *_error(400, "protocol upgrades are not supported")[1:])
        except httptools.HttpParserError as exc:
            self.keep_alive = False
            self._respond(400, *_error(400, f"malformed HTTP request: {exc}")[1:])

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.busy = True
        self.url, self.body, self.size, self.too_large = b"", [], 0, False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.app.max_body:
            self.too_large = True
        elif not self.too_large:
            self.body.append(body)

    def on_message_complete(self) -> None:
        started = time.perf_counter()
        method = self.parser.get_method().decode()
        self.keep_alive = self.parser.should_keep_alive() and not self.server.stopping
        path = self.url.split(b"?", 1)[0].decode(errors="replace")
        infer = path.endswith("/infer")
        faults = self.app.faults
        if self.too_large:
            status, body, ctype = _error(413, f"the body is {self.size} bytes; at most {self.app.max_body} "
                                              "(--max-body-bytes)")
        else:
            try:
                status, body, ctype = self.app.handle(method, path, b"".join(self.body))
            except BadRequest as exc:
                status, body, ctype = _error(exc.status, str(exc))
            except Exception:  # a bug must not take the server down: log it, answer 500, keep serving
                log.exception("error answering %s %s", method, path)
                status, body, ctype = _error(500, "internal error (see the server log)")
        faulty = infer and status < 400 and faults.apply_to(self.app.last_replay)
        if faulty and faults.error_rate and faults.error():
            status, body, ctype = _error(500, "injected fault (--inject-error-rate)")
        if faulty and faults.delay:
            asyncio.get_running_loop().call_later(faults.delay, self._finish, status, body, ctype, infer, started)
        else:
            self._finish(status, body, ctype, infer, started)

    def _finish(self, status: int, body: bytes, ctype: bytes, infer: bool, started: float) -> None:
        self._respond(status, body, ctype)
        if infer:
            self.app.monitor.observe(time.perf_counter() - started, status)
        self.busy = False
        self.server.request_done()

    def _respond(self, status: int, body: bytes, ctype: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
            status, _REASONS.get(status, b"Unknown"), ctype, len(body),
            b"" if self.keep_alive else b"connection: close\r\n")
        self.transport.write(head + body)
        if not self.keep_alive:
            self.transport.close()


class Server:
    def __init__(self, app: App) -> None:
        self.app = app
        self.connections: set[HttpProtocol] = set()
        self.stopping = False
        self.idle = asyncio.Event()

    def request_done(self) -> None:
        if self.stopping and not any(c.busy for c in self.connections):
            self.idle.set()

    async def serve(self, host: str, port: int, ready: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: HttpProtocol(self.app, self), host, port, backlog=1024,
                                          reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving model %s on http://%s:%d (%s)", self.app.name, host, port,
                 "ready" if self.app.model else f"NOT ready: {self.app.problem}")
        if ready is not None:
            ready.set()
        await stop.wait()
        # graceful: no new connections; finish what is in flight; close idle keep-alive connections
        self.stopping = True
        server.close()
        if any(c.busy for c in self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), timeout=30)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        await server.wait_closed()
        log.info("stopped")


def load_app(args: argparse.Namespace) -> App:
    model: LoadedModel | None = None
    problem: str | None = None
    try:
        model = LoadedModel.load(args.name, Path(args.model_dir), args.digest, args.allow_unsafe_formats)
    except artifacts.DigestMismatch as exc:
        problem = str(exc)
    except (artifacts.ArtifactError, OSError, ImportError, ValueError) as exc:
        problem = f"the model cannot be loaded: {exc}"
    if problem:
        log.error("model %s is not ready: %s", args.name, problem)
    return App(args.name, model, problem, args.max_body_bytes, monitoring=not args.no_monitoring,
               faults=Faults(args.inject_error_rate, args.inject_delay_ms, args.inject_live_only))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--digest", help="expected digest of the model directory (sha256:…); refused on mismatch")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--allow-unsafe-formats", action="store_true",
                        help="load joblib/pickle models (they run code from the file)")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--no-monitoring", action="store_true", help="do not count inputs into drift sketches")
    parser.add_argument("--inject-error-rate", type=float, default=0.0, metavar="FRACTION",
                        help="answer this fraction of inference requests with 500 (to rehearse a rollback)")
    parser.add_argument("--inject-delay-ms", type=float, default=0.0, metavar="MS",
                        help="delay every inference answer by this much (to rehearse a rollback)")
    parser.add_argument("--inject-live-only", action="store_true",
                        help="spare replayed validation rows (mlops analyze) from the injected faults")
    args = parser.parse_args(argv)
    if not 0.0 <= args.inject_error_rate <= 1.0 or args.inject_delay_ms < 0:
        parser.error("--inject-error-rate must be within [0, 1] and --inject-delay-ms not negative")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = load_app(args)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(Server(app).serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
