"""kserve's InferenceRESTClient (v2, JSON and binary) and InferenceGRPCClient against an OIP server.

    python kserve_client.py http://HOST:PORT GRPC_HOST:PORT MODEL ROWS_JSON
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

base, grpc_url, name, rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
X = np.asarray(rows, dtype=np.float32)


async def main() -> dict:
    out = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    out["live"] = await rest.is_server_live(base)
    out["model_ready"] = await rest.is_model_ready(base, name)
    for binary in (True, False):
        inp = InferInput("input-0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        res = await rest.infer(base, InferRequest(model_name=name, infer_inputs=[inp], request_id="k1"),
                               model_name=name)
        out[f"rest_binary={binary}"] = {o.name: o.as_numpy().tolist() for o in res.outputs}
    await rest.close()
    grpc = InferenceGRPCClient(grpc_url, timeout=30)
    out["grpc_live"] = await grpc.is_server_live()
    out["grpc_model_ready"] = await grpc.is_model_ready(name)
    inp = InferInput("input-0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    res = await grpc.infer(InferRequest(model_name=name, infer_inputs=[inp], request_id="k2"))
    out["grpc"] = {o.name: o.as_numpy().tolist() for o in res.outputs}
    await grpc.close()
    return out


print(json.dumps(asyncio.run(main())))
