"""tritonclient (HTTP and gRPC; JSON and binary tensors) against an OIP server.

    python triton_client.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL VERSION ROWS_JSON
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

http_url, grpc_url, name, version, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
X = np.asarray(rows, dtype=np.float32)
out = {}

c = httpclient.InferenceServerClient(http_url)
out["http"] = {"live": c.is_server_live(), "ready": c.is_server_ready(), "model_ready": c.is_model_ready(name),
               "version_ready": c.is_model_ready(name, version), "other_version_ready": c.is_model_ready(name, "7"),
               "versions": c.get_model_metadata(name)["versions"]}
for binary in (True, False):
    inp = httpclient.InferInput("input-0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("predict", binary_data=binary),
               httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    for v in ("", version):
        r = c.infer(name, [inp], outputs=outputs, model_version=v, request_id="t1")
        out[f"http_binary={binary}_version={bool(v)}"] = {"predict": r.as_numpy("predict").tolist(),
                                                           "probabilities": r.as_numpy("probabilities").tolist(),
                                                           "id": r.get_response()["id"]}
# default outputs (none requested): every output, binary by tritonclient's default
inp = httpclient.InferInput("input-0", list(X.shape), "FP32")
inp.set_data_from_numpy(X)
out["http_default"] = c.infer(name, [inp]).as_numpy("predict").tolist()

g = grpcclient.InferenceServerClient(grpc_url)
meta = g.get_model_metadata(name)
out["grpc"] = {"live": g.is_server_live(), "ready": g.is_server_ready(), "model_ready": g.is_model_ready(name),
               "version_ready": g.is_model_ready(name, version), "versions": list(meta.versions),
               "outputs": [o.datatype for o in meta.outputs]}
inp = grpcclient.InferInput("input-0", list(X.shape), "FP32")
inp.set_data_from_numpy(X)
r = g.infer(name, [inp], outputs=[grpcclient.InferRequestedOutput("predict"),
                                  grpcclient.InferRequestedOutput("probabilities")], model_version=version)
out["grpc_infer"] = {"predict": r.as_numpy("predict").tolist(), "probabilities": r.as_numpy("probabilities").tolist()}
try:
    g.infer("wine", [inp])
    out["grpc_unknown"] = "answered"
except Exception as exc:  # tritonclient's InferenceServerException
    out["grpc_unknown"] = str(exc)
print(json.dumps(out))
