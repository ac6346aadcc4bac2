"""The generated open-inference-openapi client against an OIP server.

    python oip_client.py http://HOST:PORT MODEL VERSION ROWS_JSON
"""

import json
import sys

from open_inference.openapi.client import InferenceRequest, OpenInferenceClient
from open_inference.openapi.types.request_input import RequestInput

base, name, version, rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
client = OpenInferenceClient(base_url=base)
out = {}
client.check_server_liveness()
client.check_server_readiness()
client.check_model_readiness(name)
client.check_model_version_readiness(name, version)
out["server"] = client.read_server_metadata().dict()
out["model"] = client.read_model_metadata(name).dict()
out["version_model"] = client.read_model_version_metadata(name, version).dict()
request = InferenceRequest(id="o1", inputs=[RequestInput(name="input-0", shape=[len(rows), len(rows[0])],
                                                         datatype="FP64", data=rows)])
for key, response in (("infer", client.model_infer(name, request=request)),
                      ("version_infer", client.model_version_infer(name, version, request=request))):
    out[key] = {"id": response.id, "model_version": response.model_version,
                "outputs": {o.name: json.loads(o.json()) for o in response.outputs}}
print(json.dumps(out, default=str))
