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
