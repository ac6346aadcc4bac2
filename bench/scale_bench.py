"""Scale benchmark: one operator, 1,000 models, on the real apiserver.

    python bench/scale_bench.py [--models 1000] [--noise-pods 10000] [--concurrency 16] [--rounds 5]
                                [--peers floor,beside,watched,bare]

Every measurement runs on a control plane of its own, started fresh: etcd + kube-apiserver only (no Job or
Deployment controller, no node, so what is measured is the operator's own work), with `--noise-pods` unrelated
Pods in another namespace as a real cluster has, and the apiserver's raw create rate from one client (ConfigMaps,
`--concurrency` requests in flight). One apiserver measured several times was slower each time (it held more),
so a ceiling measured after the operator on the same one was not the same ceiling. In `--rounds` rounds, rotated
(round 0 starts with the operator):

  * our operator (`mlops run -n bench`, a process of its own) on `--models` ModelDeployments (pinned model, a
    first version: a Deployment and the active Service each), timed from the first create to the last first
    status (written after the children): ModelDeployments reconciled per second, and the CPU the operator and the
    control plane use meanwhile. In round 0 also as many TrainingRuns (a Job each) and DriftPolicies (p50 and
    p99 create → first status per kind), then `--paced` more ModelDeployments at a steady `--rate` with
    everything held (the latency at scale), API requests per reconcile and writes by resource (the operator's
    own counters), RSS when everything is reconciled, CPU while idle for 30 s;
  * the floor under the operator (bench/floor_client.py): its own API client, informers, cache and work queue
    writing, for each new ModelDeployment, what the operator wrote for one, with no decision (what the operator
    costs beyond it is its decisions);
  * the ceiling: a bare client making, per ModelDeployment, the writes the operator made for one in round 0 (its
    own request counters, by verb and resource: the ModelDeployment's create, its children from the operator's
    own builders, its status patches), `--concurrency` in flight, in the namespace the operator used: with the
    watches any operator of these kinds holds open (its kinds, its children by its label, the bench's watcher of
    first statuses; the apiserver sends each of them every write), once beside the bench's own stream of creates
    (as the operator's writes follow the creates: the like-for-like ceiling), once after each create on the same
    connections (the creates wait for the writes); then with no watch.

Then a do-nothing kopf operator watching the same kinds (bench/noop_operator.py), on a control plane of its own:
its RSS and idle CPU.

Prints the figures and the ratios against the peers: the ratio of the medians, the ratio round by round (each
pair on control planes started minutes apart) and the median of those. The machine moves a rate by ±15 % from one
control plane to the next, so one peer over many rounds (`--peers beside --rounds 11`) says more about that ratio
than every peer over a few.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "operator"))

from mlops_operator.dev import install  # noqa: E402
from mlops_operator.dev.controlplane import ControlPlane, free_port  # noqa: E402

NS, NOISE = "bench", "noise"
GROUP = "/apis/mlops.dev/v1alpha1"


class Client:
    def __init__(self, cp: ControlPlane, concurrency: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {cp.token}"}
        self.session = aiohttp.ClientSession(headers=headers,
                                             connector=aiohttp.TCPConnector(ssl=ctx, limit=concurrency))
        # watches (and profiles) on connections of their own, as an operator holds them: a held stream never takes
        # one of the `concurrency` connections the writes have
        self.streams = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=ctx, limit=0))
        self.server = cp.server
        self.concurrency = concurrency
        self.limit = asyncio.Semaphore(concurrency)

    async def post(self, path: str, body: dict[str, Any]) -> float:
        """Create; returns when it was acknowledged (monotonic)."""
        async with self.limit, self.session.post(
                self.server + path, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"POST {path}: {resp.status} {await resp.text()}")
            await resp.read()
            return time.monotonic()

    async def apply(self, path: str, body: dict[str, Any]) -> None:
        async with self.limit, self.session.patch(
                self.server + path, data=orjson.dumps(body), params={"fieldManager": "bench", "force": "true"},
                headers={"Content-Type": "application/apply-patch+yaml"}) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"apply {path}: {resp.status} {await resp.text()}")
            await resp.read()

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        async with self.limit, self.session.patch(
                self.server + path, data=orjson.dumps({"status": status}),
                headers={"Content-Type": "application/merge-patch+json"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"PATCH {path}: {resp.status} {await resp.text()}")
            await resp.read()

    async def get(self, path: str) -> dict[str, Any]:
        async with self.session.get(self.server + path) as resp:
            return dict(await resp.json())

    async def close(self) -> None:
        await self.session.close()
        await self.streams.close()

    async def profile(self, seconds: int, out: Path | None) -> None:
        """The apiserver's own Go CPU profile over the next `seconds` (its /debug/pprof, on by default) into `out`
        (`go tool pprof -top` reads it)."""
        if out is None:
            return
        async with self.streams.get(f"{self.server}/debug/pprof/profile", params={"seconds": str(seconds)},
                                    timeout=aiohttp.ClientTimeout(total=seconds + 30)) as resp:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(await resp.read())


def model_deployment(i: int) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": f"m{i}"},
            "spec": {"model": {"storageUri": f"s3://models/bench/m{i}", "digest": "sha256:" + "a" * 64},
                     "replicas": 1, "storage": {"secretRef": {"name": "s3"}}}}


def training_run(i: int) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": f"t{i}"},
            "spec": {"model": f"m{i}", "trainer": {"estimator": "sklearn.linear_model.LogisticRegression"},
                     "dataset": {"uri": "s3://data/d.csv", "targetColumn": "y"},
                     "storage": {"secretRef": {"name": "s3"}}}}


def drift_policy(i: int) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": f"d{i}"},
            "spec": {"targetRef": {"name": f"m{i}"}, "action": {"type": "Alert"}}}


def raw_children(n: int, ns: str) -> list[tuple[str, dict[str, Any]]]:
    """The children our operator writes for `n` pinned ModelDeployments (its own builders: a Deployment
    and two Services each), with the path each is applied to."""
    from mlops_operator.api.modeldeployment import ModelDeploymentSpec
    from mlops_operator.builders.modeldeployment import deployment, service

    out = []
    for i in range(n):
        md = {**model_deployment(i), "metadata": {"name": f"m{i}", "namespace": ns, "uid": f"u{i}"}}
        spec = ModelDeploymentSpec.model_validate(md["spec"])
        d = deployment(md, spec, f"r{i}", model_uri=f"s3://models/bench/m{i}", digest="sha256:" + "a" * 64,
                       replicas=1, runtime_image="ghcr.io/mlops-dev/mlops-runtime:0.1.0")
        out.append((f"/apis/apps/v1/namespaces/{ns}/deployments/{d['metadata']['name']}", d))
        for preview in (False, True):
            svc = service(md, f"r{i}", preview)
            out.append((f"/api/v1/namespaces/{ns}/services/{svc['metadata']['name']}", svc))
    return out


def pod(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "labels": {"app": "noise"}},
            "spec": {"containers": [{"name": "c", "image": "example.org/noise:1"}]}}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """CPU used over a phase by the operator, by the control plane (apiserver + etcd, and each of them) and by this
    process (the bench's client: the creates and the watch of first statuses, or all of the bare client's writes),
    as % of a core and, with `per` objects, CPU milliseconds per object."""

    def __init__(self, proc: Process | None, cp: ControlPlane) -> None:
        self.proc, self.apiserver, self.etcd = proc, cp.pids["kube-apiserver"], cp.pids["etcd"]
        self.start = self._now()
        self.end: tuple[float, ...] | None = None

    def _now(self) -> tuple[float, ...]:
        apiserver, etcd = cpu_seconds(self.apiserver), cpu_seconds(self.etcd)
        return (time.monotonic(), self.proc.cpu_seconds() if self.proc else 0.0, apiserver + etcd,
                cpu_seconds(os.getpid()), apiserver, etcd)

    def stop(self, per: int) -> CpuShare:
        self.end, self.per = self._now(), per
        return self

    def __str__(self) -> str:
        end = self.end or self._now()
        took, ours, theirs, client, apiserver, etcd = (b - a for a, b in zip(self.start, end, strict=True))
        parts = ([("operator", ours)] if self.proc else []) + [
            ("apiserver + etcd", theirs), ("apiserver", apiserver), ("etcd", etcd), ("bench client", client)]
        text = "CPU: " + ", ".join(f"{name} {100 * used / took:.0f} %" for name, used in parts) + \
            f" of a core ({os.cpu_count()} cores)"
        if self.end is not None:
            text += "; per object " + ", ".join(f"{name} {1000 * used / self.per:.1f} ms" for name, used in parts)
        return text


class Process:
    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def idle_cpu(self, seconds: float) -> float:
        start, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu_seconds() - start) / (time.monotonic() - t0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def metrics(port: int) -> dict[str, float]:
    """Each series summed over its labels; API writes also as `mlops_api_requests_total_write`, and per
    verb and resource as `writes:VERB RESOURCE`."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
            if s.labels.get("verb") in ("POST", "PATCH", "PUT", "DELETE"):
                out[f"{s.name}_write"] = out.get(f"{s.name}_write", 0.0) + s.value
                if s.name == "mlops_api_requests_total":
                    key = f"writes:{s.labels['verb']} {s.labels['resource']}"
                    out[key] = out.get(key, 0.0) + s.value
    return out


async def paced(args: argparse.Namespace, client: Client, cp: ControlPlane, proc: Process) -> None:
    """Latency at scale: with everything above reconciled, `--paced` more ModelDeployments created at a
    steady `--rate` (as a busy cluster sees them), each timed from its create to its first status."""
    bodies = [model_deployment(args.models + i) for i in range(args.paced)]
    path = f"{GROUP}/namespaces/{NS}/modeldeployments"
    names = {b["metadata"]["name"] for b in bodies}
    created: dict[str, float] = {}

    async def create() -> None:
        start = time.monotonic()
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            created[body["metadata"]["name"]] = time.monotonic()
            await client.post(path, body)

    cpu = CpuShare(proc, cp)
    watcher = asyncio.create_task(first_status(client, "modeldeployments", names, created, time.monotonic() + 300))
    await create()
    seen = await watcher
    if len(seen) < len(names):
        raise RuntimeError(f"only {len(seen)} of {len(names)} paced modeldeployments got a status")
    latencies = list(seen.values())
    print(f"mlops: {args.paced} more modeldeployments at {args.rate:.0f}/s with {3 * args.models} objects held: "
          f"create → first status p50 {pct(latencies, 0.5) * 1000:.0f} ms, p99 {pct(latencies, 0.99) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms; {cpu}")


async def first_status(client: Client, plural: str, names: set[str], created: dict[str, float],
                       deadline: float) -> dict[str, float]:
    """Seconds from each object's create to its first status, by watching (resourceVersion 0)."""
    seen: dict[str, float] = {}
    while len(seen) < len(names) and time.monotonic() < deadline:
        url = f"{client.server}{GROUP}/namespaces/{NS}/{plural}?watch=1&timeoutSeconds=30"
        async with client.streams.get(url) as resp:
            async for line in resp.content:
                event = orjson.loads(line)  # the bench's own watcher: as cheap as it can be, it shares the cores
                obj = event["object"]
                name = obj["metadata"]["name"]
                if name in names and name not in seen and (obj.get("status") or {}).get("conditions"):
                    seen[name] = time.monotonic() - created[name]
                if len(seen) == len(names) or time.monotonic() > deadline:
                    break
    return seen


async def settled_writes(port: int) -> dict[str, float]:
    """The operator's writes by verb and resource, once they stopped growing for a second."""
    last: dict[str, float] = {}
    while True:
        now = {k: v for k, v in metrics(port).items() if k.startswith("writes:")}
        if now == last:
            return now
        last = now
        await asyncio.sleep(1)


async def apiserver_counts(client: Client) -> dict[str, float]:
    """The apiserver's own counters: requests by verb and resource, watch events sent by kind."""
    from prometheus_client.parser import text_string_to_metric_families

    async with client.session.get(client.server + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "apiserver_request_total":
                sub = s.labels.get("subresource")
                key = f"{s.labels.get('verb')} {s.labels.get('resource')}{'/' + sub if sub else ''}"
            elif s.name == "apiserver_watch_events_total":
                key = f"watch events {s.labels.get('kind')}"
            else:
                continue
            out[key] = out.get(key, 0.0) + s.value
    return out


def served(before: dict[str, float], after: dict[str, float], n: int) -> str:
    """What the apiserver served per object between two readings of its counters (and, in all, what it served
    less than once per hundred objects)."""
    delta = {k: after[k] - before.get(k, 0.0) for k in sorted(after) if after[k] > before.get(k, 0.0)}
    few = [f"{k} {v:.0f}" for k, v in delta.items() if v < n / 100]
    return ", ".join(f"{k} {v / n:.2f}" for k, v in delta.items() if v >= n / 100) + \
        (f"; in all: {', '.join(few)}" if few else "")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def create_all(client: Client, path: str, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """Create every body; the create time of each (sent), and the rate (done/s)."""
    sent: dict[str, float] = {}

    async def one(body: dict[str, Any]) -> None:
        sent[body["metadata"]["name"]] = time.monotonic()
        await client.post(path, body)

    await asyncio.gather(*(one(b) for b in bodies))
    return sent


PPROF_SECONDS = 10

ORDER = ("mlops", "floor", "beside", "watched", "bare")
"""What is measured in each round, each on a control plane of its own: our operator; the floor (bench/floor_client.py:
the operator's client, informers, cache and queue writing what it wrote, no decision); the bare client with the
watches an operator holds, its writes beside the bench's stream of creates as the operator's are ("beside"), or
after each create on the same connections ("watched"); the bare client alone. Rotated from round to round (round 0
starts with the operator: the floor and the bare client make the writes it counted there)."""
PEERS = ORDER[1:]


@contextlib.asynccontextmanager
async def fresh(args: argparse.Namespace, state: Path) -> AsyncIterator[tuple[ControlPlane, Client, float]]:
    """A new etcd + kube-apiserver with the CRDs, the bench's namespaces and `--noise-pods` unrelated Pods: every
    measurement starts from the same state (on one apiserver, later measurements were slower: it held more);
    with the apiserver's raw create rate from one client on it."""
    cp = ControlPlane(state, with_controllers=False, with_node=False)
    cp.start()
    client: Client | None = None
    try:
        install.apply_crds(str(cp.kubeconfig))
        client = Client(cp, args.concurrency)
        for ns in (NS, NOISE, "raw"):
            await client.post("/api/v1/namespaces", {"metadata": {"name": ns}})
        await create_all(client, f"/api/v1/namespaces/{NOISE}/pods", [pod(i) for i in range(args.noise_pods)])
        t0 = time.monotonic()
        await create_all(client, "/api/v1/namespaces/raw/configmaps",
                         [{"metadata": {"name": f"c{i}"}, "data": {"k": "v"}} for i in range(args.models)])
        yield cp, client, args.models / (time.monotonic() - t0)
    finally:
        if client:
            await client.close()
        cp.stop()
        shutil.rmtree(state, ignore_errors=True)


def operator_process(args: argparse.Namespace, cp: ControlPlane, label: str, work: Path,
                     profile: bool) -> tuple[Process, int]:
    cmd = ([sys.executable, str(TOP / "bench" / "noop_operator.py")] if label == "noop kopf" else
           [sys.executable, *(["-m", "cProfile", "-o", args.profile] if profile else []),
            "-m", "mlops_operator.cli", "run", "-n", NS])
    port = free_port()
    return Process(cmd, {"KUBECONFIG": str(cp.kubeconfig), "MLOPS_METRICS_PORT": str(port),
                         "MLOPS_EVENTS": "warnings", "MLOPS_LOG_LEVEL": "WARNING",
                         "MLOPS_RESYNC_SECONDS": "3600", "PYTHONPATH": str(TOP / "operator"),
                         **({"MLOPS_WORKERS": str(args.workers)} if args.workers else {})},
                   work / f"{label.replace(' ', '-')}.log"), port


def floor_process(args: argparse.Namespace, cp: ControlPlane, work: Path,
                  status: dict[str, Any]) -> tuple[Process, None]:
    """bench/floor_client.py on `--models` ModelDeployments, writing the `status` the operator wrote."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "status.json").write_bytes(orjson.dumps(status))
    cmd = [sys.executable, str(TOP / "bench" / "floor_client.py"), cp.server, cp.token, NS, str(work / "status.json"),
           str(args.models)]
    return Process(cmd, {"MLOPS_LOG_LEVEL": "WARNING"}, work / "floor.log"), None


async def run(args: argparse.Namespace, work: Path) -> None:
    order = ("mlops", *(what for what in PEERS if what in args.peers))
    rates: dict[str, list[tuple[float, str]]] = {what: [] for what in order}
    raw: list[float] = []
    ours: dict[str, Any] = {}
    for r in range(args.rounds):
        for what in order[r % len(order):] + order[:r % len(order)]:
            state = work / f"round{r}-{what}"
            async with fresh(args, state / "cp") as (cp, client, raw_rate):
                raw.append(raw_rate)
                pprof = Path(args.pprof) / f"round{r}-{what}.pprof" if args.pprof else None
                print(f"round {r}, {what}: a fresh control plane, {args.noise_pods} unrelated Pods; raw create rate "
                      f"from one client {raw_rate:.0f} objects/s ({args.concurrency} in flight)")
                if what in ("mlops", "floor"):
                    proc, port = operator_process(args, cp, what, state, profile=bool(args.profile) and r == 0) \
                        if what == "mlops" else floor_process(args, cp, state, ours["status"])
                    try:
                        out = await measure(args, client, cp, proc, port, what, full=r == 0 and what == "mlops",
                                            pprof=pprof)
                        if r == 0 and what == "mlops":  # a reconciled ModelDeployment's status, for the others' patches
                            ours = out | {"status": (await client.get(
                                f"{GROUP}/namespaces/{NS}/modeldeployments/m0"))["status"]}
                    finally:
                        proc.stop()
                    rates[what].append((out["md_rate"], out["md_cpu"]))
                else:
                    rates[what].append(await bare_client(client, cp, args.models, ours["md_writes"], ours["status"],
                                                         NS, what != "bare", pprof, beside=what == "beside"))
                    print(f"round {r}, {what}: {rates[what][-1][0]:.0f} ModelDeployments/s; {rates[what][-1][1]}")
    async with fresh(args, work / "noop" / "cp") as (cp, client, _):
        proc, port = operator_process(args, cp, "noop kopf", work / "noop", profile=False)
        try:
            noop = await measure(args, client, cp, proc, port, "noop kopf", full=True)
        finally:
            proc.stop()

    print()
    print(f"{'':34}{'mlops':>12}{'noop kopf':>12}{'ratio':>8}")
    for key, text in (("rss", "RSS reconciled (MB)"), ("idle", "idle CPU (% of a core)"),
                      ("md_rate", "ModelDeployments/s to status")):
        ratio = f"{ours[key] / noop[key]:8.2f}" if noop[key] >= 0.05 else f"{'-':>8}"
        print(f"{text:34}{ours[key]:12.2f}{noop[key]:12.2f}{ratio}")
    print()
    print(f"ModelDeployments to status, the same writes each ({args.models} of them, {args.rounds} rounds, each on "
          f"a fresh control plane; apiserver raw create rate, median: {statistics.median(raw):.0f}/s)")
    print("  writes per ModelDeployment: " + ", ".join(
        f"{k.split(':', 1)[1]} {n / args.models:.2f}" for k, n in sorted(ours["md_writes"].items())))
    mine = [x for x, _ in rates["mlops"]]
    for what, text in (("mlops", "mlops"), ("floor", "floor: our client, cache, no decision"),
                       ("beside", "bare client, beside the creates"),
                       ("watched", "bare client, watched as an operator"),
                       ("bare", "bare client, no watch")):
        if what not in rates:
            continue
        xs = [x for x, _ in rates[what]]
        line = f"  {text:<36}{statistics.median(xs):6.0f} /s  (rounds: {', '.join(f'{x:.0f}' for x in xs)})"
        if what != "mlops":
            paired = [m / x for m, x in zip(mine, xs, strict=True)]
            line += (f"   mlops / it: {statistics.median(mine) / statistics.median(xs):.2f} (round by round: "
                     f"{', '.join(f'{p:.2f}' for p in paired)}; their median {statistics.median(paired):.2f})")
        print(line)
        print(f"  {'':<36}{rates[what][0][1]} (round 0)")


async def bare_client(client: Client, cp: ControlPlane, n: int, writes: dict[str, float],
                      status: dict[str, Any], ns: str, watched: bool, pprof: Path | None = None,
                      beside: bool = False) -> tuple[float, str]:
    """The ceiling: a bare client making the writes the operator made for `n` ModelDeployments in this run (its
    own request counters, `writes`: "writes:VERB RESOURCE" → total), in the namespace the operator used
    (on a control plane of its own);
    `watched`: with the watches any operator of these kinds holds open (the apiserver sends them every write).
    Each ModelDeployment is created, as the bench created them for the operator, then its children (the
    operator's builders' manifests: created by POST, written again by server-side apply) and its status patches
    (merge patches of the status the operator wrote), `--concurrency` requests in flight;
    `beside`: the creates go, as the bench sends them to the operator, on connections of their own (`--concurrency`
    in flight), and the writes for each ModelDeployment follow its create on another `--concurrency`, as the
    operator's follow the creates it sees (else the creates wait for connections the writes hold, and the apiserver
    never has more than `--concurrency` requests at once). ModelDeployments per second, and the CPU meanwhile."""
    children = raw_children(n, ns)  # per ModelDeployment i: its Deployment, Service and preview Service
    per_md = {key.split(":", 1)[1]: [int(total) // n + (1 if i < int(total) % n else 0) for i in range(n)]
              for key, total in writes.items()}
    unknown = {k for k in per_md if k.split()[1] not in ("deployments", "services", "modeldeployments")}
    if unknown:
        raise RuntimeError(f"the operator made writes the bare client does not know how to make: {unknown}")

    writer = Client(cp, client.concurrency) if beside else client

    async def one(i: int) -> None:
        md_path = f"{GROUP}/namespaces/{ns}/modeldeployments"
        await client.post(md_path, model_deployment(i))
        objects = {"deployments": children[3 * i: 3 * i + 1], "services": children[3 * i + 1: 3 * i + 3]}
        # creates first, then applies, the status last (as the operator: children, then status)
        for key, counts in sorted(per_md.items(), key=lambda kv: (kv[0].split()[1] == "modeldeployments",
                                                                   kv[0].split()[0] != "POST")):
            verb, resource = key.split()
            for j in range(counts[i]):
                if resource == "modeldeployments":
                    await writer.patch_status(f"{md_path}/m{i}/status", status)
                    continue
                path, body = objects[resource][j % len(objects[resource])]
                if verb == "POST" and j < len(objects[resource]):
                    await writer.post(path.rsplit("/", 1)[0], body)
                else:
                    await writer.apply(path, body)

    # the watches any operator of these kinds holds (the apiserver sends each write to them): its three kinds,
    # and its children by its label, as ours holds them; and the bench's own watcher of first statuses
    from mlops_operator.main import MANAGED_BY_SELECTOR

    own = [f"{GROUP}/namespaces/{ns}/{plural}" for plural in ("modeldeployments", "trainingruns", "driftpolicies",
                                                               "modeldeployments")]
    children_of = [f"/apis/apps/v1/namespaces/{ns}/deployments", f"/api/v1/namespaces/{ns}/services",
                   f"/apis/batch/v1/namespaces/{ns}/jobs"]
    watches = [asyncio.create_task(drain(client, path, None)) for path in own] + \
        [asyncio.create_task(drain(client, path, MANAGED_BY_SELECTOR)) for path in children_of] if watched else []
    try:
        await asyncio.sleep(1)  # the watches are open
        cpu, before = CpuShare(None, cp), await apiserver_counts(client)
        t0, profiled = time.monotonic(), asyncio.create_task(client.profile(PPROF_SECONDS, pprof))
        await asyncio.gather(*(one(i) for i in range(n)))
        rate = n / (time.monotonic() - t0)
        cpu.stop(n)
        await profiled
        print(f"  the apiserver served per ModelDeployment: {served(before, await apiserver_counts(client), n)}")
    finally:  # a failed write ends the measurement: the watches and the second client go with it
        for w in watches:
            w.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        if writer is not client:
            await writer.close()
    return rate, str(cpu)


async def drain(client: Client, path: str, selector: str | None) -> None:
    """A watch whose events are read and dropped, as an informer reads them."""
    params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "900",
              **({"labelSelector": selector} if selector else {})}
    async with client.streams.get(client.server + path, params=params,
                                  timeout=aiohttp.ClientTimeout(total=None)) as resp:
        async for _ in resp.content:
            pass


async def measure(args: argparse.Namespace, client: Client, cp: ControlPlane, proc: Process, port: int | None,
                  label: str, full: bool, pprof: Path | None = None) -> dict[str, Any]:
    """`full`: every kind, then the paced creates, RSS and idle CPU; else the burst of ModelDeployments only.
    `port`: where the operator's metrics are; None for the floor (bench/floor_client.py), up once it says `ready`."""
    def up() -> bool:  # the operator is up when its metrics answer (the noop peer serves them too)
        if port is None:
            return b"ready" in Path(proc.log.name).read_bytes()
        try:
            metrics(port)
        except OSError:
            return False
        return True

    deadline = time.monotonic() + 120
    while not up():
        if time.monotonic() > deadline or proc.proc.poll() is not None:
            raise RuntimeError(f"{label} did not start: see {proc.log.name}")
        await asyncio.sleep(0.2)
    out: dict[str, Any] = {}
    kinds = (("modeldeployments", model_deployment), ("trainingruns", training_run), ("driftpolicies", drift_policy))
    for plural, make in kinds if full else kinds[:1]:
        bodies = [make(i) for i in range(args.models)]
        path = f"{GROUP}/namespaces/{NS}/{plural}"
        before = await apiserver_counts(client)
        t0, cpu = time.monotonic(), CpuShare(proc, cp)
        profiled = asyncio.create_task(client.profile(PPROF_SECONDS, pprof if plural == "modeldeployments" else None))
        created_task = asyncio.create_task(create_all(client, path, bodies))
        await asyncio.sleep(0)
        created = await created_task
        names = set(created)
        if label in ("mlops", "floor"):
            seen = await first_status(client, plural, names, created, time.monotonic() + 600)
            cpu.stop(len(names))
            print(f"  the apiserver served per object: {served(before, await apiserver_counts(client), len(names))}")
            if len(seen) < len(names):
                raise RuntimeError(f"{label}: only {len(seen)} of {len(names)} {plural} got a status")
            took = max(created[n] + seen[n] for n in names) - t0
            latencies = list(seen.values())
            print(f"{label}: {len(names)} {plural}: create → first status p50 {pct(latencies, 0.5) * 1000:.0f} ms, "
                  f"p99 {pct(latencies, 0.99) * 1000:.0f} ms; all reconciled in {took:.1f} s "
                  f"({len(names) / took:.0f}/s); {cpu}")
            if plural == "modeldeployments":
                out["md_rate"], out["md_cpu"] = len(names) / took, str(cpu)
                if port is not None:
                    out["md_writes"] = await settled_writes(port)
        else:  # the peer writes no status: it is done when it has handled every event
            assert port is not None
            target = (kinds.index((plural, make)) + 1) * args.models
            while metrics(port).get("noop_events_total", 0) < target:
                await asyncio.sleep(0.2)
            took = time.monotonic() - t0
            if plural == "modeldeployments":
                out["md_rate"] = args.models / took
            print(f"{label}: saw {args.models} {plural} in {took:.1f} s")
        await profiled
    if not full:
        return out
    if label == "mlops" and args.paced:
        await paced(args, client, cp, proc)
    await asyncio.sleep(15)  # steady state: everything reconciled and quiet for a while
    out["rss"] = proc.rss_mb()
    out["idle"] = 100 * proc.idle_cpu(30)
    if label == "mlops" and port is not None:
        m = metrics(port)
        requests, reconciles = m.get("mlops_api_requests_total", 0), m.get("mlops_reconciles_total", 1)
        writes = m.get("mlops_api_requests_total_write", 0)
        print(f"{label}: {reconciles:.0f} reconciles, {requests:.0f} API requests ({writes:.0f} writes): "
              f"{requests / reconciles:.2f} requests and {writes / reconciles:.2f} writes per reconcile")
        print(f"{label}: writes by resource: " + ", ".join(
            f"{k.split(':', 1)[1]} {n:.0f}" for k, n in sorted(m.items()) if k.startswith("writes:")))
    print(f"{label}: RSS {out['rss']:.0f} MB with everything reconciled; idle CPU {out['idle']:.2f} % of a core")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--noise-pods", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--paced", type=int, default=200,
                        help="then this many more ModelDeployments at a steady rate, for the latency at scale")
    parser.add_argument("--rate", type=float, default=20.0, help="creates per second of --paced")
    parser.add_argument("--workers", type=int, help="MLOPS_WORKERS for our operator (default: its own)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of the operator and the bare client, each on a fresh control plane (medians)")
    parser.add_argument("--peers", type=lambda text: set(text.split(",")), default=set(PEERS),
                        help=f"what is measured beside our operator in each round, of {','.join(PEERS)} "
                             f"(default: all; fewer, more rounds in the same time: the ratio to one peer is "
                             f"as noisy as the machine, and more pairs narrow it)")
    parser.add_argument("--profile", help="write a cProfile of our operator to this file")
    parser.add_argument("--pprof", help=f"write the apiserver's CPU profile of each burst of ModelDeployments "
                                        f"(its first {PPROF_SECONDS} s) into this folder (go tool pprof -top FILE)")
    args = parser.parse_args()
    if unknown := args.peers - set(PEERS):
        parser.error(f"--peers: {','.join(sorted(unknown))} is not one of {','.join(PEERS)}")
    with tempfile.TemporaryDirectory(prefix="mlops-scale-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
