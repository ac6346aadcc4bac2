"""Install paths with the real helm and kubectl against the real control plane: the chart lints and
renders, installs and uninstalls (keeping the CRDs), the plain manifests are fresh and the
apiserver accepts them, and the operator's ServiceAccount gets exactly what its rules say."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from mlops_operator.cli import RUNTIME_COMMANDS, build_parser
from mlops_operator.dev import manifests
from mlops_operator.dev.controlplane import ControlPlane
from mlops_operator.dev.tools import tool
from tests.cases import example

from .conftest import Cluster, OperatorProcess, wait_for

TOP = Path(__file__).resolve().parents[2]
CHART = TOP / "charts" / "mlops-operator"


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [tool("helm"), *args] + ([f"--kubeconfig={kubeconfig}"] if kubeconfig else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {proc.stderr}")
    return proc


def rendered(*sets: str) -> list[dict]:
    args = ["template", "mlops-operator", str(CHART), "--namespace", "mlops-system"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def test_chart_lints_and_renders_least_privilege_rbac() -> None:
    assert "0 chart(s) failed" in helm("lint", str(CHART)).stdout
    docs = rendered()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("CustomResourceDefinition") == 3 and "Deployment" in kinds and "ServiceAccount" in kinds
    # crds.install=false: CRDs already there (kubectl apply -f crds/, mlops dev up, another release) are left alone
    assert not [d for d in rendered("crds.install=false") if d["kind"] == "CustomResourceDefinition"]
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            assert d["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert "secrets" not in rule["resources"], rule
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    # two replicas under leader election (a Role for the one Lease in the release namespace); one without
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (lease_role,) = [d for d in docs if d["kind"] == "Role"]
    assert lease_role["metadata"]["namespace"] == "mlops-system" and lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]
    single = next(d for d in rendered("leaderElection.enabled=false") if d["kind"] == "Deployment")
    assert single["spec"]["replicas"] == 1 and single["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    aggregated = {d["metadata"]["name"]: d["metadata"]["labels"] for d in docs if d["kind"] == "ClusterRole"}
    assert aggregated["mlops-operator-edit"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert aggregated["mlops-operator-view"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"


def test_namespaced_mode_uses_roles_in_the_watched_namespaces() -> None:
    docs = rendered("watchNamespaces={team-a,team-b}")
    roles = sorted((d["kind"], d["metadata"].get("namespace")) for d in docs if d["kind"] in ("Role", "RoleBinding"))
    assert roles == [("Role", "mlops-system"), ("Role", "team-a"), ("Role", "team-b"),  # the Lease's, then the apps'
                     ("RoleBinding", "mlops-system"), ("RoleBinding", "team-a"), ("RoleBinding", "team-b")]
    # explicit namespaces: the cluster-wide rules are the CRDs' alone (no namespace list or watch)
    framework = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-framework"))
    assert [r["resources"] for r in framework["rules"]] == [["customresourcedefinitions"]]
    assert "mlops-operator" not in [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"]
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["-n", "team-a", "-n", "team-b"]


def test_images_call_entry_points_that_exist() -> None:
    text = (TOP / "images" / "Dockerfile").read_text()
    assert re.findall(r'ENTRYPOINT \["(\w+)"\]', text) == ["mlops", "mlops"]
    assert 'mlops = "mlops_operator.cli:main"' in (TOP / "pyproject.toml").read_text()
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"run", "serve"} <= commands and set(RUNTIME_COMMANDS) <= commands
    for cmd in re.findall(r'CMD \["([\w-]+)"', text):
        assert cmd in commands
    # what the operator's Jobs and Deployments run exists in the runtime image's CLI
    for name in ("train", "train-pipeline", "serve", "storage-init"):
        proc = subprocess.run([sys.executable, "-m", "mlops_operator.cli", name, "--help"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_plain_manifests_are_fresh_and_accepted_by_the_apiserver(cluster: Cluster) -> None:
    assert manifests.stale(TOP) == [], "generated install files are stale: run `mlops manifests`"
    # a server-side dry run creates nothing, not even the file's own Namespace its objects need
    cluster.kubectl("create", "namespace", manifests.NAMESPACE, check=False)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", str(manifests.target(TOP)), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "deployment.apps/mlops-operator created (server dry run)" in proc.stdout


def test_helm_install_upgrade_and_uninstall_keep_the_crds_current(cluster: Cluster, sp_namespace: str,
                                                                 tmp_path: Path) -> None:
    # the session's CRDs were applied without Helm: let the release adopt them, as an upgrade from
    # plain manifests would
    for crd in ("trainingruns", "modeldeployments", "driftpolicies"):
        cluster.kubectl("label", "--overwrite", f"crd/{crd}.mlops.dev", "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl("annotate", "--overwrite", f"crd/{crd}.mlops.dev", "meta.helm.sh/release-name=mlops-it",
                        f"meta.helm.sh/release-namespace={sp_namespace}")
    # an older release whose DriftPolicy CRD has no spec.perFeatureMetrics yet, then an upgrade to this
    # chart: Helm upgrades CRDs that are templates (never those in a chart's crds/ folder)
    old_chart = tmp_path / "mlops-operator"
    shutil.copytree(CHART, old_chart)
    crd_file = old_chart / "templates" / "crds" / "mlops.dev_driftpolicies.yaml"
    template = crd_file.read_text().splitlines(keepends=True)
    guard, body = [t for t in template if t.startswith("{{-")], [t for t in template if not t.startswith("{{-")]
    assert [g.strip() for g in guard] == ["{{- if .Values.crds.install }}", "{{- end }}"]
    crd = yaml.safe_load("".join(body))
    properties = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    del properties["perFeatureMetrics"]
    crd_file.write_text(guard[0] + yaml.safe_dump(crd) + guard[1])

    def served_fields() -> set[str]:
        live = cluster.kubectl("get", "crd", "driftpolicies.mlops.dev", "-o", "json").stdout
        return set(json.loads(live)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                   ["properties"])

    try:
        # (adopting CRDs another field manager applied takes --force-conflicts with Helm 4's server-side apply)
        values = ("--set", "aggregateToUserRoles=false", "--set", f"watchNamespaces={{{sp_namespace}}}",
                  "--set", "image.pullPolicy=Never")
        helm("install", "mlops-it", str(old_chart), "--namespace", sp_namespace, *values, "--force-conflicts",
             kubeconfig=cluster.kubeconfig)
        assert "perFeatureMetrics" not in served_fields()
        helm("upgrade", "mlops-it", str(CHART), "--namespace", sp_namespace, *values, kubeconfig=cluster.kubeconfig)
        assert "perFeatureMetrics" in served_fields()
    finally:  # whatever happened, the session's other tests get this CRD back
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(TOP / "crds" / "mlops.dev_driftpolicies.yaml"))
    deployment = cluster.apps.read_namespaced_deployment("mlops-it", sp_namespace)
    assert deployment.spec.template.spec.service_account_name == "mlops-it"
    # its Pod runs, from the operator image built here, and goes Ready
    wait_for(lambda: any(c.type == "Ready" and c.status == "True"
                         for p in cluster.core.list_namespaced_pod(sp_namespace).items
                         for c in p.status.conditions or ()), 180, "the operator Pod to be Ready")
    can = cluster.kubectl("auth", "can-i", "create", "jobs.batch", "-n", sp_namespace,
                          f"--as=system:serviceaccount:{sp_namespace}:mlops-it", check=False)
    assert can.stdout.strip() == "yes"
    for verb, resource in (("get", "secrets"), ("delete", "nodes"), ("create", "pods"), ("update", "trainingruns")):
        denied = cluster.kubectl("auth", "can-i", verb, resource, "-n", sp_namespace,
                                 f"--as=system:serviceaccount:{sp_namespace}:mlops-it", check=False)
        assert denied.stdout.strip() == "no", (verb, resource)
    helm("uninstall", "mlops-it", "--namespace", sp_namespace, kubeconfig=cluster.kubeconfig)
    wait_for(lambda: not cluster.apps.list_namespaced_deployment(sp_namespace).items, 60, "the release to go")
    names = cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "trainingruns.mlops.dev" in names  # kept: uninstalling the operator never deletes users' models


@pytest.mark.parametrize("values", ["events=warnings", "image.digest=sha256:" + "a" * 64, "namespace.create=true",
                                    "networkPolicy.enabled=false"])
def test_optional_values_render(values: str) -> None:
    docs = rendered(values)
    deployment = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    kinds = [d["kind"] for d in docs]
    if values.startswith("events"):
        assert {"name": "MLOPS_EVENTS", "value": "warnings"} in deployment["env"]
    elif values.startswith("image.digest"):
        assert deployment["image"] == "ghcr.io/mlops-dev/mlops-operator@sha256:" + "a" * 64
    elif values.startswith("namespace.create"):
        namespace = next(d for d in docs if d["kind"] == "Namespace")
        assert kinds[0] == "Namespace" and {f"pod-security.kubernetes.io/{m}": "restricted" for m in (
            "enforce", "audit", "warn")}.items() <= namespace["metadata"]["labels"].items()
    else:
        assert "NetworkPolicy" not in kinds


def test_the_default_network_policy_admits_only_prometheus_to_metrics() -> None:
    docs = rendered()
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 9090}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ready"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080, "ready": 8081,
                                                                          "metrics": 9090}


def test_gitops_example_renders_and_is_accepted(cluster: Cluster) -> None:
    gitops = TOP / "examples" / "gitops"
    docs = [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(gitops)).stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["DriftPolicy", "ModelDeployment"]
    assert all(d["metadata"]["namespace"] == "ml-iris" for d in docs)
    cluster.kubectl("create", "namespace", "ml-iris", check=False)
    proc = cluster.kubectl("apply", "--dry-run=server", "-k", str(gitops), check=False)
    assert proc.returncode == 0, proc.stderr
    application = yaml.safe_load((gitops / "application.yaml").read_text())
    assert application["spec"]["source"]["path"] == "examples/gitops"
    health = yaml.safe_load((gitops / "argocd-cm.yaml").read_text())["data"]
    assert set(health) == {f"resource.customizations.health.mlops.dev_{k}"
                           for k in ("TrainingRun", "ModelDeployment", "DriftPolicy")}


def test_kind_path_installs_the_images_it_builds_and_runs_the_loop_the_cli_has(cluster: Cluster) -> None:
    kind = TOP / "examples" / "kind"
    script = (kind / "run.sh").read_text()
    assert subprocess.run(["bash", "-n", str(kind / "run.sh")], capture_output=True).returncode == 0
    built = dict(re.findall(r"--target (\w+) -t ([\w:.-]+)", script))
    docs = [d for d in yaml.safe_load_all(helm("template", "mlops-operator", str(CHART), "--namespace",
                                                   "mlops-system", "--values", str(kind / "values.yaml")).stdout) if d]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == built["operator"]
    assert {"name": "MLOPS_RUNTIME_IMAGE", "value": built["runtime"]} in container["env"]
    assert sorted((d["kind"], d["metadata"]["namespace"]) for d in docs if d["kind"] == "Role") == [
        ("Role", "mlops-demo"), ("Role", "mlops-system")]
    # the loop command and flags the script calls exist
    loop = re.search(r'"\$MLOPS" dev loop (.*)', script)
    assert loop is not None
    args = build_parser().parse_args(["dev", "loop", *loop.group(1).split()])
    assert args.via_apiserver and args.create_buckets and args.namespace == "mlops-demo"
    # MinIO and the Secret the examples name are accepted by the apiserver
    ns = "mlops-demo"
    cluster.kubectl("create", "namespace", ns, check=False)
    try:
        cluster.kubectl("apply", "--dry-run=server", "-f", str(kind / "minio.yaml"))
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    secret = next(d for d in yaml.safe_load_all((kind / "minio.yaml").read_text()) if d["kind"] == "Secret")
    for name in ("trainingrun.yaml", "modeldeployment.yaml", "driftpolicy.yaml", "bad-candidate.yaml",
                 "qualitypolicy.yaml", "corrupted.yaml"):
        text = (TOP / "examples" / "loop" / name).read_text()
        assert f"name: {secret['metadata']['name']}" in text


def _service_account_kubeconfig(cluster: Cluster, control_plane: ControlPlane, ns: str, sa: str, path: Path) -> Path:
    """A kubeconfig holding a token of the ServiceAccount's own (TokenRequest API)."""
    def token() -> str | None:
        with contextlib.suppress(ApiException):  # the ServiceAccount may not be there yet
            answer = cluster.core.create_namespaced_service_account_token(
                sa, ns, {"spec": {"expirationSeconds": 3600}})
            return str(answer.status.token)
        return None

    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"] = [{"name": sa, "user": {"token": wait_for(token, 30, f"a token for ServiceAccount {sa}")}}]
    config["contexts"][0]["context"]["user"] = sa
    path.write_text(yaml.safe_dump(config))
    return path


def _chart_rbac(cluster: Cluster, ns: str, release: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and roles for a release watching `ns`, applied."""
    docs = [d for d in yaml.safe_load_all(helm(
        "template", release, str(CHART), "--namespace", ns, "--set", f"watchNamespaces={{{ns}}}",
        "--set", "aggregateToUserRoles=false").stdout) if d]
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                              "RoleBinding")]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(rbac))
    return rbac


def _delete_cluster_rbac(cluster: Cluster, rbac: list[dict[str, Any]]) -> None:
    for d in rbac:
        if d["kind"].startswith("Cluster"):
            cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], check=False)


def test_the_operator_as_the_charts_service_account_reconciles_every_kind_and_nothing_more(
    cluster: Cluster, control_plane: ControlPlane, sp_namespace: str, tmp_path: Path
) -> None:
    ns, release = sp_namespace, f"mlops-{sp_namespace[-8:]}"
    rbac = _chart_rbac(cluster, ns, release)
    operator = OperatorProcess(_service_account_kubeconfig(cluster, control_plane, ns, release,
                                                           tmp_path / "sa-kubeconfig"),
                               ns, tmp_path / "operator.log", env={"MLOPS_RESYNC_SECONDS": "5"})
    try:
        operator.start()
        run = example("TrainingRun")
        run["spec"]["suspend"] = True
        cluster.create(run, ns)
        md = example("ModelDeployment")
        md["spec"]["model"] = {"storageUri": "s3://models/pinned/iris",
                               "digest": "sha256:" + "0" * 64}
        cluster.create(md, ns)
        cluster.create(example("DriftPolicy"), ns)
        cluster.wait_condition("TrainingRun", ns, "iris-v1", "False", "Suspended", timeout=60)
        wait_for(lambda: [d.metadata.name for d in cluster.apps.list_namespaced_deployment(ns).items], 60,
                 "the pinned version's Deployment")
        wait_for(lambda: [s.metadata.name for s in cluster.core.list_namespaced_service(ns).items], 60,
                 "the ModelDeployment's Services")
        wait_for(lambda: cluster.condition("ModelDeployment", ns, "iris", "Progressing"), 60,
                 "the ModelDeployment's status")
        wait_for(lambda: cluster.condition("DriftPolicy", ns, "iris-drift"), 60, "the DriftPolicy's status")
        assert "Forbidden" not in operator.output() and "403" not in operator.output(), operator.output()
        # what its rules do not grant is refused by the apiserver
        sa_kubeconfig = str(tmp_path / "sa-kubeconfig")
        for args in (("get", "secrets", "-n", ns), ("get", "pods", "-n", "default"), ("delete", "node", "x")):
            denied = subprocess.run([tool("kubectl"), f"--kubeconfig={sa_kubeconfig}", *args],
                                    capture_output=True, text=True, timeout=60)
            assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), (args, denied.stderr)
    finally:
        operator.stop()
        _delete_cluster_rbac(cluster, rbac)


def test_the_operator_keeps_reconciling_when_its_token_rotates(
    cluster: Cluster, control_plane: ControlPlane, sp_namespace: str, tmp_path: Path
) -> None:
    """Bound tokens expire and the kubelet rewrites the token file: the operator reads it again (and at once
    on a 401), as client-go does. Here the token is bound to a Secret (TokenRequest), the file is replaced
    with a new token, and the old one revoked by deleting its Secret."""
    ns, release = sp_namespace, f"mlops-{sp_namespace[-8:]}"
    rbac = _chart_rbac(cluster, ns, release)

    def bound_token(secret: str) -> str:
        uid = cluster.core.create_namespaced_secret(ns, {"metadata": {"name": secret}}).metadata.uid

        def token() -> str | None:
            with contextlib.suppress(ApiException):  # the ServiceAccount may not be there yet
                return str(cluster.core.create_namespaced_service_account_token(release, ns, {"spec": {
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": uid}}}
                ).status.token)
            return None
        return str(wait_for(token, 30, f"a token bound to Secret {secret}"))

    def accepted(token: str) -> bool:
        request = urllib.request.Request(f"{control_plane.server}/api/v1/namespaces/{ns}/configmaps",
                                         headers={"Authorization": f"Bearer {token}"})
        ca = yaml.safe_load(control_plane.kubeconfig.read_text())["clusters"][0]["cluster"]
        ctx = ssl.create_default_context(cafile=ca.get("certificate-authority"))
        if ca.get("certificate-authority-data"):
            ctx.load_verify_locations(cadata=base64.b64decode(ca["certificate-authority-data"]).decode())
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=10):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code != 401

    token_file = tmp_path / "token"
    token_file.write_text(bound_token("token-a"))
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"] = [{"name": release, "user": {"tokenFile": str(token_file)}}]
    config["contexts"][0]["context"]["user"] = release
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    operator = OperatorProcess(kubeconfig, ns, tmp_path / "operator.log", env={"MLOPS_RESYNC_SECONDS": "5"})
    try:
        operator.start()
        run = example("TrainingRun")
        run["spec"]["suspend"] = True
        cluster.create(run, ns)
        cluster.wait_condition("TrainingRun", ns, "iris-v1", "False", "Suspended", timeout=60)
        old = token_file.read_text()
        rotated = tmp_path / "token.new"
        rotated.write_text(bound_token("token-b"))
        rotated.replace(token_file)  # as the kubelet swaps a projected volume: the whole file at once
        cluster.core.delete_namespaced_secret("token-a", ns)
        wait_for(lambda: not accepted(old), 60, "the old token to be revoked")
        run["metadata"]["name"] = "iris-v2"
        cluster.create(run, ns)
        cluster.wait_condition("TrainingRun", ns, "iris-v2", "False", "Suspended", timeout=90)
        assert operator.proc is not None and operator.proc.poll() is None, operator.output()
    finally:
        operator.stop()
        _delete_cluster_rbac(cluster, rbac)


def test_monitoring_values_render_and_the_dashboard_reads_only_series_that_exist() -> None:

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from mlops_operator.builders.modeldeployment import MONITORING_PORT
    from mlops_operator.metrics import Registry
    from mlops_operator.runtime.inference import Monitor

    docs = rendered("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true",
                    "grafanaDashboard.enabled=true")
    by_kind = {d["kind"]: d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor", "ConfigMap")}
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics"))
    assert by_kind["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == 9090
    endpoint = by_kind["PodMonitor"]["spec"]["podMetricsEndpoints"][0]
    relabeled = {r["targetLabel"] for r in endpoint["relabelings"]}
    # model servers' /metrics is on their monitoring port, the one no Service exposes
    assert endpoint["port"] == "monitoring" and MONITORING_PORT == 8082
    dashboard = json.loads((CHART / "dashboards" / "mlops-loop.json").read_text())
    assert json.loads(by_kind["ConfigMap"]["data"]["mlops-loop.json"]) == dashboard
    assert by_kind["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"

    # every series a panel reads is one the operator or a model server exports
    families = list(text_string_to_metric_families(generate_latest(Monitor(model=None).registry).decode()))
    server = {s.name for f in families for s in f.samples} | {f"{f.name}_total" for f in families
                                                               if f.type == "counter"}
    operator = set(Registry().help)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\b(mlops_[a-z_]+)\b", e)}
    assert used and used <= server | operator, used - server - operator
    # …grouped by labels those series have (the server's come from the PodMonitor's relabelings)
    for e in exprs:
        names = set(re.findall(r"\b(mlops_[a-z_]+)\b", e))
        for group in re.findall(r"by \(([^)]*)\)", e):
            labels = {g.strip() for g in group.split(",")}
            if names <= server:
                assert labels <= relabeled | {"le"}, (e, labels)
            else:
                assert labels <= {"namespace", "name", "outcome", "kind", "verb", "resource", "feature"}, (e, labels)


def test_an_informer_refused_403_makes_the_operator_unready_naming_the_watch(
    cluster: Cluster, control_plane: ControlPlane, sp_namespace: str, tmp_path: Path
) -> None:
    """The chart's Role without `services`: the Service informer is refused (403) while the others list.
    /readyz answers 503 naming it within 30 s, the log names the watch; granted again, the operator is ready."""
    ns, release = sp_namespace, f"mlops-{sp_namespace[-8:]}"
    rbac = _chart_rbac(cluster, ns, release)
    role = next(d for d in rbac if d["kind"] == "Role")
    narrowed = copy.deepcopy(role)
    narrowed["rules"] = [r for r in narrowed["rules"] if "services" not in r["resources"]]
    assert len(narrowed["rules"]) == len(role["rules"]) - 1
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(narrowed))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    operator = OperatorProcess(_service_account_kubeconfig(cluster, control_plane, ns, release,
                                                           tmp_path / "sa-kubeconfig"),
                               ns, tmp_path / "operator.log", env={"MLOPS_READY_PORT": str(port)})

    def readiness() -> tuple[int, dict[str, Any]] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return None  # not listening yet

    try:
        operator.start()
        started = time.monotonic()
        _, answer = wait_for(lambda: (r := readiness()) and r[0] == 503 and any(
            f"services in {ns}" in p and "failed" in p for p in r[1]["problems"]) and r, 45,
            "/readyz to name the refused Service informer", show=lambda: (readiness(), operator.output()[-2000:]))
        assert time.monotonic() - started < 40 and not answer["ready"]
        assert f"watch of services in {ns} failed" in operator.output() and "403" in operator.output()
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(role))
        wait_for(lambda: (r := readiness()) and r[0] == 200, 60, "/readyz to answer 200 once granted",
                 show=lambda: readiness())
    finally:
        operator.stop()
        _delete_cluster_rbac(cluster, rbac)
