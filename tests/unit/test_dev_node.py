"""The pure parts of the dev cluster's node: DNS records from Services, the node's configuration files, and
what the image build hashes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlops_operator.dev import clusterdns, imagebuild, node

pytestmark = pytest.mark.unit


def service(ns: str, name: str, ip: str | None) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(namespace=ns, name=name), spec=SimpleNamespace(cluster_ip=ip))


def test_dns_records_name_cluster_ips_and_headless_endpoints() -> None:
    lines = clusterdns.records(
        [service("b", "web", "10.96.0.20"), service("a", "db", "None"), service("default", "kubernetes", "10.96.0.1")],
        {("a", "db"): [("10.244.0.7", "db-0"), ("10.244.0.8", None)]})
    assert lines == ["10.244.0.7 db.a.svc.cluster.local", "10.244.0.8 db.a.svc.cluster.local",
                     # a Pod with a hostname under its headless Service (its subdomain) is named too
                     "10.244.0.7 db-0.db.a.svc.cluster.local",
                     "10.96.0.20 web.b.svc.cluster.local", "10.96.0.1 kubernetes.default.svc.cluster.local"]


def test_the_node_is_configured_inside_its_state_directory(tmp_path: Path) -> None:
    config = node.write_containerd_config(tmp_path, "localhost/pause:1").read_text()
    assert f'root = "{tmp_path / "containerd" / "root"}"' in config
    assert "restrict_oom_score_adj = true" in config and 'sandbox_image = "localhost/pause:1"' in config
    conflist = json.loads((tmp_path / "cni" / "net.d" / "10-mlops.conflist").read_text())
    bridge = conflist["plugins"][0]
    assert bridge["bridge"] == node.BRIDGE and bridge["ipam"]["dataDir"].startswith(str(tmp_path))
    kubelet = json.loads(node.write_kubelet_config(tmp_path, tmp_path / "certs").read_text())
    assert kubelet["cgroupRoot"] == f"/{node.cgroup_name(tmp_path)}" and kubelet["clusterDNS"] == [node.NODE_IP]
    assert kubelet["authentication"]["anonymous"]["enabled"] is False and kubelet["readOnlyPort"] == 0
    # two clusters never share a namespace or a cgroup
    assert node.netns_name(tmp_path / "a") != node.netns_name(tmp_path / "b")


def test_the_image_inputs_hash_changes_with_the_sources_only() -> None:
    first = imagebuild.context_hash("localhost/base:1")
    assert imagebuild.context_hash("localhost/base:1") == first
    assert imagebuild.context_hash("localhost/base:2") != first


def test_a_state_directory_too_deep_for_the_nodes_sockets_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from mlops_operator.dev.controlplane import ControlPlane, ControlPlaneError

    assert node.socket_path_problem(Path("/tmp/mlops-dev")) is None
    deep = tmp_path / ("d" * (node.SOCKET_PATH_MAX - len(str(tmp_path))))
    problem = node.socket_path_problem(deep)
    assert problem and "kubelet/root/" in problem and "use a shorter state directory" in problem
    with pytest.raises(ControlPlaneError, match="too deep for the node's unix sockets"):
        ControlPlane(deep).start()
    assert not deep.exists()  # refused before anything was made
