"""`inference.GRPCInferenceService` of the Open Inference Protocol on grpcio's asyncio server.

The same `Served` model as REST: the same validation (a client's mistake is INVALID_ARGUMENT, an
unknown model or version NOT_FOUND, a model that is not ready UNAVAILABLE), the same predictions, the
same monitoring counters (each call counted under the HTTP status its gRPC code stands for). Inputs
come as typed `contents` or as `raw_input_contents`; outputs always go back as `raw_output_contents`,
as Triton does (what tritonclient and kserve's clients read).

The messages are generated from `oip/open_inference_grpc.proto` (vendored, see oip/README.md); the
service is registered with grpcio's generic handlers, so no generated service module is needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from . import tensors
from .inference import BadRequest, Request, Served, Tensor
from .oip import open_inference_grpc_pb2 as pb
from .rest import VERSION, Faults, bearer_ok

SERVICE = "inference.GRPCInferenceService"
# grpcio's asyncio server hands calls to the loop one at a time, about half a millisecond apart under load
# (its own per-call cost: a no-op servicer answers about 1,800-2,400 calls/s here), so calls never wait
# together by themselves; under back-to-back load a batch waits this long for the next ones (h2load -c8 -m8,
# side by side: 3 ms 1484 and 1186 calls/s, 6 ms 1703 and 1358; unbatched about 900). `--grpc-batch-window-ms`
GATHER_SECONDS = 0.006
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          503: grpc.StatusCode.UNAVAILABLE, 500: grpc.StatusCode.INTERNAL}


def _param(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _input(t: Any, i: int, raw: bytes | None) -> Tensor:
    where = f"inputs[{i}]"
    if t.datatype not in tensors.DATATYPES:
        raise BadRequest(f"{where}.datatype {t.datatype!r} is not a V2 datatype")
    shape = tensors.check_shape(list(t.shape), where)
    if raw is not None:
        return Tensor(t.name, t.datatype, tensors.from_binary(raw, shape, t.datatype, where))
    field = CONTENTS.get(t.datatype)
    if field is None:
        raise BadRequest(f"{where}: {t.datatype} has no typed contents: send it in raw_input_contents")
    values = list(getattr(t.contents, field))
    if t.datatype == "BYTES":
        if len(values) != int(np.prod(shape)):
            raise BadRequest(f"{where}: shape {shape} holds {int(np.prod(shape))} values but contents has "
                             f"{len(values)}")
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return Tensor(t.name, t.datatype, array.reshape(shape))
    return Tensor(t.name, t.datatype, tensors.from_json(values, shape, t.datatype, where))


def to_request(req: Any) -> Request:
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs")
    if not req.inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    try:
        inputs = [_input(t, i, raw[i] if raw else None) for i, t in enumerate(req.inputs)]
    except tensors.BadTensor as exc:
        raise BadRequest(str(exc)) from None
    outputs = {o.name: True for o in req.outputs} if req.outputs else None
    return Request(req.id or None, inputs, outputs, True)


class Servicer:
    def __init__(self, served: Served, tokens: frozenset[str], faults: Faults,
                 gather: float = GATHER_SECONDS) -> None:
        self.served, self.tokens, self.faults, self.gather = served, tokens, faults, gather

    async def _authorize(self, context: Any) -> None:
        if not self.tokens:
            return
        if not bearer_ok(dict(context.invocation_metadata() or ()).get("authorization", ""), self.tokens):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required (authorization metadata)")

    def _model_ok(self, name: str, version: str) -> bool:
        model = self.served.model
        return name == self.served.name and model is not None and version in ("", model.version)

    async def server_live(self, req: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, req: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.served.model is not None)

    async def model_ready(self, req: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self._model_ok(req.name, req.version))

    async def server_metadata(self, req: Any, context: Any) -> Any:
        await self._authorize(context)
        return pb.ServerMetadataResponse(name="mlops-serve", version=VERSION, extensions=["monitoring"])

    async def model_metadata(self, req: Any, context: Any) -> Any:
        await self._authorize(context)
        if not self._model_ok(req.name, req.version):
            await self._not_found(req.name, req.version, context)
        meta = self.served.model.metadata_response()  # type: ignore[union-attr]
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    async def _not_found(self, name: str, version: str, context: Any) -> None:
        if self.served.model is None and name == self.served.name:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(self.served.not_ready()))
        if name != self.served.name:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown model {name!r}: this server serves {self.served.name!r}")
        await context.abort(grpc.StatusCode.NOT_FOUND, f"model {name} has no version {version!r}")

    async def model_infer(self, req: Any, context: Any) -> Any:
        await self._authorize(context)
        model = self.served.model
        if req.model_name != self.served.name or (model is not None and not self._model_ok(req.model_name,
                                                                                            req.model_version)):
            # another model's or version's call (a 404 on REST's routes): not counted as this one's
            await self._not_found(req.model_name, req.model_version, context)
        started = time.perf_counter()
        status, message, response = 200, "", None
        try:
            # not ready: 503, counted as on REST
            request = to_request(req)
            model, outputs = await self.served.infer_batched(request, gather=self.gather)
            # the id the server assigned when the client gave none and capture is on
            response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id or "")
            for name, array in outputs.items():
                datatype = model.outputs[name].datatype
                response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
                response.raw_output_contents.append(tensors.to_binary(array, datatype))
            if self.faults.apply_to(False) and self.faults.error_rate and self.faults.error():
                status, message = 500, "injected fault (--inject-error-rate)"
        except BadRequest as exc:
            status, message = exc.status, str(exc)
        except Exception:  # a bug must not take the server down
            logging.getLogger("mlops.serve").exception("error answering a gRPC inference request")
            status, message = 500, "internal error (see the server log)"
        if self.faults.delay and status < 400 and self.faults.apply_to(False):
            await asyncio.sleep(self.faults.delay)
        self.served.monitor.observe(time.perf_counter() - started, status)
        if status >= 400:
            await context.abort(_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT
                                           if status < 500 else grpc.StatusCode.INTERNAL), message)
        return response


def _handlers(servicer: Servicer) -> Any:
    def unary(fn: Callable[[Any, Any], Awaitable[Any]], request: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request.FromString,
                                                   response_serializer=lambda m: m.SerializeToString())

    return grpc.method_handlers_generic_handler(SERVICE, {
        "ServerLive": unary(servicer.server_live, pb.ServerLiveRequest),
        "ServerReady": unary(servicer.server_ready, pb.ServerReadyRequest),
        "ModelReady": unary(servicer.model_ready, pb.ModelReadyRequest),
        "ServerMetadata": unary(servicer.server_metadata, pb.ServerMetadataRequest),
        "ModelMetadata": unary(servicer.model_metadata, pb.ModelMetadataRequest),
        "ModelInfer": unary(servicer.model_infer, pb.ModelInferRequest),
    })


async def start(served: Served, host: str, port: int, *, tokens: frozenset[str] = frozenset(),
                tls: tuple[str, str] | None = None, max_message: int = 16 * 1024 * 1024,
                faults: Faults | None = None, gather: float = GATHER_SECONDS) -> Any:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message),
                                      ("grpc.max_send_message_length", max_message),
                                      ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_handlers(Servicer(served, tokens, faults or Faults(), gather)),))
    address = f"{host}:{port}"
    if tls is not None:
        creds = grpc.ssl_server_credentials([(Path(tls[1]).read_bytes(), Path(tls[0]).read_bytes())])
        server.add_secure_port(address, creds)
    else:
        server.add_insecure_port(address)
    await server.start()
    return server
