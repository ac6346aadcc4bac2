"""`mlops serve`: an Open Inference Protocol V2 server (REST and gRPC) with built-in drift sketches.

    mlops serve --model-dir DIR --name NAME [--digest sha256:…] [--host H]
                [--port 8080] [--grpc-port 8081] [--monitoring-port 8082]
                [--auth-tokens-file F] [--tls-cert F --tls-key F]
                [--capture-to URI [--capture-format jsonl|parquet] [--capture-sample-rate F] …]
                [--mirror-host H] [--mirror-port P] [--mirror-queue N] [--mirror-workers N]

Ports: REST inference on `--port` and gRPC (`inference.GRPCInferenceService`) on `--grpc-port` (0 turns
it off) — the ones Services expose, covered by `--auth-tokens-file` (bearer tokens, one a line) and
`--tls-cert/--tls-key` when given; `--monitoring-port` for the operator, the analysis Job and
Prometheus (by pod IP): health, metadata, replayed inference, `/v2/models/NAME/monitoring`,
`/v2/models/NAME/profile`, `/v2/models/NAME/mirror` (shadow traffic, mirror.py), `/metrics`; never behind a
token. See rest.py for the paths.

The HTTP layer is granian (hyper underneath), embedded in this process's event loop: chosen by
bench/serve_bench.py over uvicorn (httptools) for its throughput and because it has the limits the
protocol needs as options (rest.py lists them). gRPC is grpcio's asyncio server in the same loop.
A digest mismatch, or a model that cannot be loaded, leaves the server live but not ready, with the
reason in the log and in the ready endpoints. SIGTERM stops accepting connections, lets requests in
flight finish, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from ..api import artifacts
from .capture import FORMATS, Capture
from .inference import PREDICT, LoadedModel, Monitor, Served
from .mirror import Mirror
from .rest import BodyBudget, Faults, Limits, RestApp

log = logging.getLogger("mlops.serve")
PORT, GRPC_PORT, MONITORING_PORT = 8080, 8081, 8082


def load(args: argparse.Namespace) -> Served:
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
    monitor = Monitor(model, enabled=not args.no_monitoring)
    capture = None
    if args.capture_to and model is not None:
        meta = model.metadata
        capture = Capture(args.capture_to, model=args.name, revision=args.revision or model.digest.split(":")[-1][:16],
                          features=model.features, task=meta.task, classes=meta.classes,
                          predict_type=model.outputs[PREDICT].datatype, registry=monitor.registry,
                          fmt=args.capture_format, sample_rate=args.capture_sample_rate,
                          capacity=args.capture_queue, max_bytes=args.capture_max_bytes,
                          max_age=args.capture_max_age, pod=os.environ.get("POD_NAME"))
    mirror = None
    if model is not None and args.mirror_workers > 0:
        mirror = Mirror(args.name, args.mirror_host or f"{args.name}-preview", args.mirror_port, monitor.registry,
                        regression=model.metadata.task != "classification", capacity=args.mirror_queue,
                        workers=args.mirror_workers)
    return Served(args.name, model, problem, monitor, max_batch_rows=args.max_batch_rows, capture=capture,
                  mirror=mirror)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def read_tokens(path: str | None) -> frozenset[str]:
    if not path:
        return frozenset()
    tokens = frozenset(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    if not tokens:
        raise SystemExit(f"mlops serve: {path} holds no token")
    return tokens


def _granian(app: RestApp, host: str, port: int, limits: Limits, tls: tuple[str, str] | None) -> object:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    return Server(app, address=host, port=port, interface=Interfaces.RSGI, http=HTTPModes.http1,
                  websockets=False, backlog=1024, backpressure=limits.max_connections, log_enabled=False,
                  http1_settings=HTTP1Settings(header_read_timeout=limits.header_timeout_ms,
                                               max_buffer_size=max(8192, limits.max_head)),
                  ssl_cert=Path(tls[0]) if tls else None, ssl_key=Path(tls[1]) if tls else None)


async def serve(args: argparse.Namespace, served: Served, ready: asyncio.Event | None = None) -> None:
    limits = Limits(max_body=args.max_body_bytes, header_timeout_ms=int(args.header_timeout * 1000),
                    max_connections=args.max_connections,
                    body_timeout=args.body_timeout, body_budget=args.body_budget_bytes)
    budget = BodyBudget(limits.body_budget)
    faults = Faults(args.inject_error_rate, args.inject_delay_ms, args.inject_live_only)
    tokens = read_tokens(args.auth_tokens_file)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    inference = RestApp(served, monitoring_port=False, limits=limits, budget=budget, tokens=tokens, faults=faults)
    monitoring = RestApp(served, monitoring_port=True, limits=limits, budget=budget, faults=faults)
    servers = [_granian(inference, args.host, args.port, limits, tls)]
    if args.monitoring_port:
        servers.append(_granian(monitoring, args.host, args.monitoring_port, limits, None))
    grpc_server = None
    if args.grpc_port:
        from .grpc_server import start as start_grpc

        grpc_server = await start_grpc(served, args.host, args.grpc_port, tokens=tokens, tls=tls,
                                       max_message=args.max_body_bytes, faults=faults,
                                       gather=args.grpc_batch_window_ms / 1000)
    if served.capture is not None:
        try:
            served.capture.start()
        except OSError as problem:  # an unwritable destination: serving goes on, without capture, said so
            log.error("capture to %s is off: %s", args.capture_to, problem)
            served.capture = None
    tasks = [asyncio.ensure_future(s.serve()) for s in servers]  # type: ignore[attr-defined]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving model %s: REST on %s:%d%s, gRPC on %s, monitoring on %s (%s)", served.name, args.host,
             args.port, " (TLS)" if tls else "", args.grpc_port or "off", args.monitoring_port or "off",
             "ready" if served.model else f"NOT ready: {served.problem}")
    if ready is not None:
        ready.set()
    done, _ = await asyncio.wait([*tasks, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    for t in done:
        if t in tasks and (exc := t.exception()) is not None:
            raise exc
    # graceful: no new connections, requests in flight finish, then the process exits
    if grpc_server is not None:
        await grpc_server.stop(grace=30)
    for s in servers:
        s.stop()  # type: ignore[attr-defined]
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=35)
    if served.mirror is not None:
        served.mirror.close()
    if served.capture is not None:  # what was answered is written before the process goes
        await asyncio.to_thread(served.capture.close)
    log.info("stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--digest", help="expected digest of the model directory (sha256:…); refused on mismatch")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=PORT, help="REST inference")
    parser.add_argument("--grpc-port", type=int, default=GRPC_PORT, help="gRPC inference (0: off)")
    parser.add_argument("--monitoring-port", type=int, default=MONITORING_PORT,
                        help="monitoring, profile, metrics and replayed inference (0: off)")
    parser.add_argument("--auth-tokens-file", help="bearer tokens (one a line) the inference ports require")
    parser.add_argument("--tls-cert", help="PEM certificate for the inference ports (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key (PKCS#8) for the inference ports")
    parser.add_argument("--allow-unsafe-formats", action="store_true",
                        help="load joblib/pickle models (they run code from the file)")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="time a client has to send a request's headers; also the keep-alive idle timeout")
    parser.add_argument("--max-connections", type=_at_least_one, default=512, metavar="N",
                        help="connections each HTTP port serves at once; more wait in the backlog (1024) until one "
                             "closes (idle ones close after the keep-alive timeout)")
    parser.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="time a client has to send a request's body (408 after it)")
    parser.add_argument("--body-budget-bytes", type=int, default=64 * 1024 * 1024,
                        help="request body bytes held at once over every connection (503 past it)")
    parser.add_argument("--max-batch-rows", type=int, default=64, metavar="ROWS",
                        help="inference calls waiting at the same moment are predicted together up to this many "
                             "rows (no call waits for a batch to fill; 0 or 1: every call alone)")
    parser.add_argument("--grpc-batch-window-ms", type=float, default=6.0, metavar="MS",
                        help="while gRPC calls arrive back to back, a batch waits this long for more (0: never)")
    parser.add_argument("--revision", help="the revision this server is (in captured records; default: the "
                        "model's digest)")
    parser.add_argument("--capture-to", metavar="URI", help="capture inference calls and take feedback labels: "
                        "file://DIR, a path, or s3://BUCKET/PREFIX (see runtime/capture.py)")
    parser.add_argument("--capture-format", choices=FORMATS, default="jsonl")
    parser.add_argument("--capture-sample-rate", type=float, default=1.0, metavar="FRACTION",
                        help="the share of inference calls captured")
    parser.add_argument("--capture-queue", type=_at_least_one, default=10_000, metavar="CALLS",
                        help="calls waiting to be written; more are dropped (and counted in /metrics)")
    parser.add_argument("--capture-max-bytes", type=_at_least_one, default=64 * 1024 * 1024,
                        help="a capture file is closed (and published) past this size")
    parser.add_argument("--capture-max-age", type=float, default=60.0, metavar="SECONDS",
                        help="… and this long after it was opened")
    parser.add_argument("--mirror-host", metavar="HOST", help="where shadow traffic goes, once the operator turns "
                        "it on (POST /v2/models/NAME/mirror on the monitoring port; default: NAME-preview, the "
                        "preview Service in this Pod's namespace)")
    parser.add_argument("--mirror-port", type=int, default=MONITORING_PORT,
                        help="the candidate's port for shadow traffic (its monitoring port: calls counted as "
                             "replayed, never captured)")
    parser.add_argument("--mirror-queue", type=_at_least_one, default=1000, metavar="CALLS",
                        help="mirrored calls waiting to be sent; more are dropped (and counted)")
    parser.add_argument("--mirror-workers", type=int, default=2, metavar="N",
                        help="threads sending mirrored calls (0: this server never mirrors)")
    parser.add_argument("--no-monitoring", action="store_true", help="do not count inputs into drift sketches")
    parser.add_argument("--inject-error-rate", type=float, default=0.0, metavar="FRACTION",
                        help="answer this fraction of inference requests with 500 (to rehearse a rollback)")
    parser.add_argument("--inject-delay-ms", type=float, default=0.0, metavar="MS",
                        help="delay every inference answer by this much (to rehearse a rollback)")
    parser.add_argument("--inject-live-only", action="store_true",
                        help="spare replayed validation rows (mlops analyze) from the injected faults")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.inject_error_rate <= 1.0 or args.inject_delay_ms < 0:
        parser.error("--inject-error-rate must be within [0, 1] and --inject-delay-ms not negative")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if not 1 <= args.header_timeout <= 60:
        parser.error("--header-timeout must be within [1, 60] seconds")
    if args.body_timeout <= 0 or args.body_budget_bytes < args.max_body_bytes:
        parser.error("--body-timeout must be positive and --body-budget-bytes at least --max-body-bytes")
    if not 0.0 <= args.capture_sample_rate <= 1.0 or args.capture_max_age <= 0:
        parser.error("--capture-sample-rate must be within [0, 1] and --capture-max-age positive")
    if not 0 <= args.mirror_workers <= 16 or not 0 < args.mirror_port < 65536:
        parser.error("--mirror-workers must be within [0, 16] and --mirror-port a port")
    if args.max_batch_rows < 0 or not 0 <= args.grpc_batch_window_ms <= 100:
        parser.error("--max-batch-rows must not be negative and --grpc-batch-window-ms within [0, 100]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("granian").setLevel(logging.ERROR)  # it warns that embedding is experimental, at every start
    served = load(args)
    # what was loaded (the model, scikit-learn, numpy, pandas, grpcio) lives as long as the process: out of
    # the collector's sight, a full collection no longer walks it. Measured side by side (bench/serve_bench.py's
    # iris row, wrk -c8, 3 rounds each): p99 5.3-11.1 ms frozen against 10.9-55.9 ms not, same throughput
    gc.collect()
    gc.freeze()
    try:
        import uvloop

        uvloop.run(serve(args, served))
    except ImportError:
        asyncio.run(serve(args, served))
    return 0


if __name__ == "__main__":
    sys.exit(main())
