"""Cluster DNS for the dev cluster: dnsmasq (Debian's, a maintained server), fed from Services.

This process watches Services and Endpoints and writes one hosts file that dnsmasq reads (`--addn-hosts`):
`<svc>.<ns>.svc.cluster.local` → the ClusterIP, or a headless Service's endpoint addresses, and
`<hostname>.<svc>.<ns>.svc.cluster.local` → the address of a Pod that names that Service as its subdomain, as
cluster DNS does. Each change is written atomically and dnsmasq told to reread it (SIGHUP). dnsmasq runs as
this process's child (it dies with it), answers `cluster.local` itself (`--local`: NXDOMAIN for names it does
not know) and forwards nothing anywhere (`--no-resolv`, no servers). Run inside the cluster's network namespace as
`python -m mlops_operator.dev.clusterdns --kubeconfig K --listen ADDRESS --dir D`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

log = logging.getLogger("mlops_operator.clusterdns")
DOMAIN = "cluster.local"
PR_SET_PDEATHSIG = 1


Address = tuple[str, str | None]  # an endpoint's IP and the hostname its Pod gave itself


def records(services: list[Any], endpoints: dict[tuple[str, str], list[Address]]) -> list[str]:
    """hosts-file lines for every Service: its ClusterIP, or a headless Service's endpoint addresses and
    its Pods' host names."""
    lines = []
    for svc in sorted(services, key=lambda s: (s.metadata.namespace, s.metadata.name)):
        name = f"{svc.metadata.name}.{svc.metadata.namespace}.svc.{DOMAIN}"
        ip = svc.spec.cluster_ip
        if ip and ip != "None":
            lines.append(f"{ip} {name}")
            continue
        found = endpoints.get((svc.metadata.namespace, svc.metadata.name), [])
        lines += [f"{address} {name}" for address, _ in found]
        lines += [f"{address} {host}.{name}" for address, host in found if host]
    return lines


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Feeder:
    def __init__(self, kubeconfig: str, listen: str, directory: Path) -> None:
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.directory = directory
        self.hosts = directory / "services.hosts"
        directory.mkdir(parents=True, exist_ok=True)
        self.hosts.write_text("")
        self.dnsmasq = subprocess.Popen([
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
            f"--addn-hosts={self.hosts}", f"--listen-address={listen}", "--bind-interfaces", "--port=53",
            f"--local=/{DOMAIN}/", "--domain-needed", "--bogus-priv", "--log-facility=-", "--user=root",
            "--pid-file=", "--cache-size=0",
        ], preexec_fn=_die_with_parent)
        self.written = ""
        self.lock = threading.Lock()

    def _hup(self) -> None:
        """Tell dnsmasq to reread the hosts file, once it handles SIGHUP (before, the signal would kill it)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.dnsmasq.poll() is None:
            try:
                status = Path(f"/proc/{self.dnsmasq.pid}/status").read_text()
            except OSError:
                break
            caught = next((int(line.split()[1], 16) for line in status.splitlines()
                           if line.startswith("SigCgt:")), 0)
            if caught & (1 << (signal.SIGHUP - 1)):
                self.dnsmasq.send_signal(signal.SIGHUP)
                return
            time.sleep(0.02)

    def refresh(self) -> None:
        services = self.core.list_service_for_all_namespaces().items
        endpoints: dict[tuple[str, str], list[Address]] = {}
        for svc in services:
            if svc.spec.cluster_ip in (None, "None"):
                with contextlib.suppress(client.ApiException):
                    ep = self.core.read_namespaced_endpoints(svc.metadata.name, svc.metadata.namespace)
                    endpoints[(svc.metadata.namespace, svc.metadata.name)] = [
                        (a.ip, a.hostname) for subset in ep.subsets or () for a in subset.addresses or ()]
        text = "\n".join(records(services, endpoints)) + "\n"
        if text == self.written:
            return
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.hosts)
        self.written = text
        self._hup()
        log.info("%d names", text.count("\n") - (text == "\n"))

    def follow(self, list_all: Any, what: str) -> None:
        """Refresh on every change of one kind (Services; Endpoints, whose addresses a headless Service names)."""
        while self.dnsmasq.poll() is None:
            try:
                with self.lock:
                    self.refresh()
                for _ in watch.Watch().stream(list_all, timeout_seconds=60):
                    with self.lock:
                        self.refresh()
            except Exception as exc:  # the apiserver restarting: try again shortly
                log.warning("watching %s: %s", what, exc)
                time.sleep(1)

    def run(self) -> None:
        threading.Thread(target=self.follow, args=(self.core.list_endpoints_for_all_namespaces, "Endpoints"),
                         daemon=True).start()
        self.follow(self.core.list_service_for_all_namespaces, "Services")
        sys.exit(f"dnsmasq exited with {self.dnsmasq.returncode}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlops_operator.dev.clusterdns")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    feeder = Feeder(args.kubeconfig, args.listen, args.dir)

    def stop(*_: object) -> None:
        feeder.dnsmasq.terminate()
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    feeder.run()


if __name__ == "__main__":
    main()
