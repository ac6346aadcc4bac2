"""ModelDeployment children, pure: revisions and the manifests of a revision's server."""

from __future__ import annotations

from typing import Any

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.builders.modeldeployment import deployment, revision, service
from tests.cases import example

DIGEST = "sha256:" + "ab" * 32


def md(**spec: Any) -> tuple[dict[str, Any], ModelDeploymentSpec]:
    body = example("ModelDeployment")
    body["metadata"].update(namespace="ns", uid="uid-md", labels={"app.kubernetes.io/instance": "argo-app"})
    body["spec"].update(spec)
    return body, ModelDeploymentSpec.model_validate(body["spec"])


def test_revision_follows_the_model_and_what_the_user_chose_only() -> None:
    _, base = md()
    rev = revision(base, DIGEST)
    assert len(rev) == 8 and rev == revision(base, DIGEST)
    assert revision(base, "sha256:" + "cd" * 32) != rev
    assert revision(md(replicas=7)[1], DIGEST) == rev  # scaling is not a rollout
    assert revision(md(runtime={"image": "my/server:2"})[1], DIGEST) != rev
    assert revision(md(runtime={"args": ["--max-body-bytes", "1000"]})[1], DIGEST) != rev
    assert revision(md(runtime={"resources": {"limits": {"cpu": "2"}}})[1], DIGEST) != rev


def test_a_revision_deployment_runs_storage_init_then_the_verified_server() -> None:
    body, spec = md(runtime={"env": [{"name": "X", "value": "1"}]})
    rev = revision(spec, DIGEST)
    d = deployment(body, spec, rev, model_uri="s3://models/ns/iris/v1", digest=DIGEST, replicas=2,
                   runtime_image="runtime:1")
    assert d["metadata"]["name"] == f"iris-{rev}" and d["spec"]["replicas"] == 2
    assert d["metadata"]["ownerReferences"][0]["uid"] == "uid-md"
    assert "app.kubernetes.io/instance" not in d["metadata"]["labels"]  # never a GitOps tracking label
    pod = d["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"] == ["storage-init", "--uri", "s3://models/ns/iris/v1", "--dest", "/mnt/models",
                            "--digest", DIGEST]
    assert init["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    (server,) = pod["containers"]
    assert server["image"] == "runtime:1" and server["command"] == ["mlops"]
    assert server["args"][:7] == ["serve", "--model-dir", "/mnt/models", "--name", "iris", "--digest", DIGEST]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {"name": "X", "value": "1"} in server["env"]
    assert server["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    assert pod["automountServiceAccountToken"] is False
    assert d["spec"]["selector"]["matchLabels"] == {"mlops.dev/modeldeployment": "iris", "mlops.dev/revision": rev}


def test_services_select_the_stable_and_the_candidate_revisions() -> None:
    body, _ = md()
    active, preview = service(body, "aaaa1111"), service(body, "bbbb2222", preview=True)
    assert active["metadata"]["name"] == "iris" and preview["metadata"]["name"] == "iris-preview"
    assert active["spec"]["selector"]["mlops.dev/revision"] == "aaaa1111"
    assert preview["spec"]["selector"]["mlops.dev/revision"] == "bbbb2222"
    # no candidate: the preview Service selects nothing rather than the stable Pods
    assert service(body, None, preview=True)["spec"]["selector"]["mlops.dev/revision"] == "none"


def test_the_server_has_three_ports_and_only_the_inference_ones_are_exposed() -> None:
    from mlops_operator.builders.modeldeployment import http_route

    body, spec = md()
    rev = revision(spec, DIGEST)
    server = deployment(body, spec, rev, model_uri="s3://m", digest=DIGEST, replicas=1,
                        runtime_image="runtime:1")["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {"http": 8080, "grpc": 8081,
                                                                         "monitoring": 8082}
    assert server["args"][server["args"].index("--grpc-port") + 1] == "8081"
    assert server["args"][server["args"].index("--monitoring-port") + 1] == "8082"
    # probes on the monitoring port: plain HTTP, no token, whatever the inference ports require
    assert server["readinessProbe"]["httpGet"]["port"] == server["livenessProbe"]["httpGet"]["port"] == "monitoring"
    svc = service(body, rev)
    assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("http", "http"), ("grpc", "grpc")]
    assert svc["spec"]["ports"][1]["appProtocol"] == "kubernetes.io/h2c"
    gateway = md(traffic={"gateway": {"parentRefs": [{"name": "gw"}]}})
    route = http_route(gateway[0], gateway[1], "gateway.networking.k8s.io/v1", (100, 0))
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2/health"}},
                                                    {"path": {"type": "Exact", "value": "/v2"}},
                                                    {"path": {"type": "PathPrefix", "value": "/v2/models/iris"}}]


def test_auth_and_tls_secrets_are_mounted_and_passed_and_make_a_new_revision() -> None:
    _, plain = md()
    body, spec = md(runtime={"auth": {"secretRef": {"name": "tokens"}}, "tls": {"secretRef": {"name": "cert"}}})
    assert revision(spec, DIGEST) != revision(plain, DIGEST)
    pod = deployment(body, spec, revision(spec, DIGEST), model_uri="s3://m", digest=DIGEST, replicas=1,
                     runtime_image="runtime:1")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--auth-tokens-file") + 1] == "/etc/mlops/auth/tokens"
    assert args[args.index("--tls-cert") + 1] == "/etc/mlops/tls/tls.crt"
    assert args[args.index("--tls-key") + 1] == "/etc/mlops/tls/tls.key"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["auth"]["readOnly"] and mounts["tls"]["mountPath"] == "/etc/mlops/tls"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "tokens" and volumes["tls"]["secret"]["secretName"] == "cert"
    # without them, a revision is the hash it was before these fields existed (no rollout on upgrade)
    import json

    from mlops_operator.builders.common import short_hash

    before = {k: None for k in ("image", "args", "env", "resources", "allowUnsafeFormats")}
    assert revision(plain, DIGEST) == short_hash(DIGEST, json.dumps(before, sort_keys=True))


def test_every_child_container_has_requests_and_limits_and_every_emptydir_a_size_limit() -> None:
    """A namespace with a compute ResourceQuota and no LimitRange admits only Pods whose every container
    names requests and limits; the defaults are per role, the operator's settings replace a role's, and a
    resource's own choice wins as a whole."""
    from mlops_operator.api.trainingrun import TrainingRunSpec
    from mlops_operator.builders.common import DEFAULT_RESOURCES
    from mlops_operator.builders.modeldeployment import analysis_job
    from mlops_operator.builders.trainingrun import training_job

    body, spec = md()
    rev = revision(spec, DIGEST)
    d = deployment(body, spec, rev, model_uri="s3://m/x", digest=DIGEST, replicas=1, runtime_image="r:1")
    job = analysis_job(body, spec, rev, model_uri="s3://m/x", digest=DIGEST, candidate=["http://c"], stable=[],
                       runtime_image="r:1")
    run = example("TrainingRun")
    run["metadata"].update(namespace="ns", uid="uid-tr")
    train = training_job(run, TrainingRunSpec.model_validate(run["spec"]), runtime_image="r:1",
                         artifact_root="s3://a")
    pods = [d["spec"]["template"]["spec"], job["spec"]["template"]["spec"], train["spec"]["template"]["spec"]]
    roles = {c["name"]: c["resources"] for p in pods for c in p.get("initContainers", []) + p["containers"]}
    assert roles == {"storage-init": DEFAULT_RESOURCES["storage-init"], "server": DEFAULT_RESOURCES["serve"],
                     "analyze": DEFAULT_RESOURCES["analyze"], "trainer": DEFAULT_RESOURCES["train"]}
    for r in roles.values():
        assert set(r["requests"]) == set(r["limits"]) == {"cpu", "memory"}
    assert all(v["emptyDir"].get("sizeLimit") for p in pods for v in p["volumes"] if "emptyDir" in v)

    mine = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    body, spec = md(runtime={"resources": mine, "initResources": {"limits": {"memory": "1Gi"}}})
    operator_wide = {"serve": {"requests": {"cpu": "1"}}, "analyze": {"limits": {"cpu": "3"}}}
    d = deployment(body, spec, rev, model_uri="s3://m/x", digest=DIGEST, replicas=1, runtime_image="r:1",
                   defaults=operator_wide)
    pod = d["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == mine
    assert pod["initContainers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    job = analysis_job(body, spec, rev, model_uri="s3://m/x", digest=DIGEST, candidate=["http://c"], stable=[],
                       runtime_image="r:1", defaults=operator_wide)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "3"}}
    assert revision(spec, DIGEST) != revision(md(runtime={"resources": mine})[1], DIGEST)


def test_the_operator_refuses_child_resources_it_cannot_use(monkeypatch: Any) -> None:
    import pytest

    from mlops_operator.config import Settings

    monkeypatch.setenv("MLOPS_CHILD_RESOURCES", '{"serve": {"requests": {"cpu": "1"}}}')
    assert Settings.from_env().child_resources == {"serve": {"requests": {"cpu": "1"}}}
    for bad in ('{"server": {}}', "not json", '{"train": {"request": {}}}'):
        monkeypatch.setenv("MLOPS_CHILD_RESOURCES", bad)
        with pytest.raises(SystemExit, match="MLOPS_CHILD_RESOURCES"):
            Settings.from_env()


def test_the_template_hash_stays_the_standard_encoders_text_hash_when_remembered(monkeypatch: Any) -> None:
    """Every Deployment carries the hash of its pod template in the standard encoder's text; remembering it (by
    orjson's text) must never change it, or an upgrade would write every model's Deployment again."""
    import json

    from mlops_operator.builders import modeldeployment as build
    from mlops_operator.builders.common import short_hash

    monkeypatch.setattr(build, "TEMPLATE_HASHES_KEPT", 2)
    monkeypatch.setattr(build, "_TEMPLATE_HASHES", {})

    def standard(template: Any) -> str:
        return short_hash(json.dumps(template, sort_keys=True))

    body, spec = md(runtime={"env": [{"name": "GREETING", "value": "grüß dich"}]})  # escaped by one encoder only
    template = deployment(body, spec, revision(spec, DIGEST), model_uri="s3://m/1", digest=DIGEST, replicas=1,
                          runtime_image="runtime:1")["spec"]["template"]
    expected = standard(template)
    assert build.template_hash(template) == expected and build.template_hash(template) == expected  # then remembered
    assert build.template_hash({"b": 1, "a": [1.5, None, True]}) == standard({"a": [1.5, None, True], "b": 1})
    assert build.template_hash({"a": 1}) != build.template_hash({"a": 1.0})  # int and float: other texts
    assert len(build._TEMPLATE_HASHES) == 2  # the oldest forgotten
    assert build.template_hash(template) == expected  # and hashed again
    huge = {"x": 2 ** 70}  # beyond orjson: hashed every time, never remembered
    assert build.template_hash(huge) == standard(huge) and len(build._TEMPLATE_HASHES) == 2
