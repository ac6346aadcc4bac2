"""`mlops`: the command line (also installed as `kubectl-mlops`, a kubectl plugin)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_STATE_DIR = ".state/dev"


def _repo_crds_dir() -> Path:
    """The checkout's crds/ (operator/mlops_operator/cli.py → <top>/crds), else ./crds."""
    top = Path(__file__).resolve().parents[2]
    return top / "crds" if (top / "pyproject.toml").exists() else Path("crds")


def cmd_crds(args: argparse.Namespace) -> int:
    from . import crdgen

    crds = Path(args.dir) if args.dir else _repo_crds_dir()
    targets = [(crds, False)]
    chart = crds.parent / "charts" / "mlops-operator" / "templates" / "crds"
    if not args.dir and chart.parent.is_dir():
        targets.append((chart, True))
    status = 0
    for directory, is_chart in targets:
        if args.check:
            stale = crdgen.stale(directory, is_chart)
            if stale:
                print(f"CRDs in {directory} are stale: {', '.join(stale)}. Run `mlops crds` to regenerate.",
                      file=sys.stderr)
                status = 1
            else:
                print(f"CRDs in {directory} are up to date.")
            continue
        written = crdgen.write(directory, is_chart)
        for path in written:
            print(f"wrote {path}")
        if not written:
            print(f"CRDs in {directory} are up to date.")
    return status


def cmd_rollout(args: argparse.Namespace) -> int:
    from . import commands

    return commands.run(args.verb, args.name, args.namespace, args.revision)


def cmd_get(args: argparse.Namespace) -> int:
    from . import commands

    return commands.get(args.what, args.namespace, args.all_namespaces)


def cmd_status(args: argparse.Namespace) -> int:
    from . import commands

    return commands.status(args.target, args.namespace)


def cmd_manifests(args: argparse.Namespace) -> int:
    from .dev import manifests

    top = _repo_crds_dir().parent
    if args.check:
        stale = manifests.stale(top)
        if stale:
            print(f"stale: {', '.join(map(str, stale))}: run `mlops manifests`", file=sys.stderr)
            return 1
        print("generated install files are up to date.")
        return 0
    for path in manifests.write(top):
        print(f"wrote {path}")
    return 0


def cmd_dev_up(args: argparse.Namespace) -> int:
    from .dev import controlplane, install

    try:
        cp = controlplane.up(Path(args.state_dir))
        if not args.no_crds:
            install.apply_crds(str(cp.kubeconfig))
    except controlplane.ControlPlaneError as exc:
        print(f"mlops dev up: {exc}", file=sys.stderr)
        return 1
    print(f"# control plane {cp.server} is up (state in {cp.state_dir}); to use it:", file=sys.stderr)
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


def cmd_dev_down(args: argparse.Namespace) -> int:
    from .dev import controlplane

    left = controlplane.down(Path(args.state_dir))
    if left is None:
        print(f"no control plane is running in {Path(args.state_dir).resolve()}")
        return 0
    print(f"stopped the control plane in {Path(args.state_dir).resolve()}")
    for item in left:
        print(f"  left behind: {item}", file=sys.stderr)
    return 1 if left else 0


def cmd_dev_exec(args: argparse.Namespace) -> int:
    import os

    from .dev import controlplane, netns

    cp = controlplane.ControlPlane.load(Path(args.state_dir).resolve())
    if cp is None or not cp.netns:
        print(f"mlops dev exec: no cluster with a network namespace runs in {args.state_dir}", file=sys.stderr)
        return 1
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("mlops dev exec: give a command: mlops dev exec -- CMD [ARGS]", file=sys.stderr)
        return 2
    netns.enter(cp.netns)
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)  # the same address inside the namespace
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"mlops dev exec: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127


def cmd_dev_lock(args: argparse.Namespace) -> int:
    from .dev import lock

    top = _repo_crds_dir().parent
    if args.check:
        problems = lock.lock_problems(top)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    try:
        for path in lock.write(top):
            print(f"wrote {path}")
    except RuntimeError as exc:
        print(f"mlops dev lock: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dev_images(args: argparse.Namespace) -> int:
    from .dev import controlplane, imagebuild, node

    cp = controlplane.ControlPlane.load(Path(args.state_dir).resolve())
    target = imagebuild.Containerd(node.containerd_socket(cp.state_dir)) if cp and cp.with_node else None
    try:
        imagebuild.ensure(lambda msg: print(msg, file=sys.stderr, flush=True), target)
    except imagebuild.ImageBuildError as exc:
        print(f"mlops dev images: {exc}", file=sys.stderr)
        return 1
    for name in (imagebuild.OPERATOR_IMAGE, imagebuild.RUNTIME_IMAGE):
        print(f"{name} {imagebuild.image_id(name)}")
    return 0


def cmd_dev_binaries(args: argparse.Namespace) -> int:
    from .dev import controlplane

    try:
        found = controlplane.ensure_binaries(with_node=True)
    except controlplane.ControlPlaneError as exc:
        print(f"mlops dev binaries: {exc}", file=sys.stderr)
        return 1
    for name, path in found.items():
        print(f"{name}: {path}")
    return 0


def cmd_dev_system(args: argparse.Namespace) -> int:
    from .dev import system

    return system.ensure(args.purpose)


def cmd_dev_demo(args: argparse.Namespace) -> int:
    from .dev import controlplane, demo

    try:
        return demo.run(Path(args.state_dir), down=args.down)
    except controlplane.ControlPlaneError as exc:
        print(f"mlops dev demo: {exc}", file=sys.stderr)
        return 1


def _kubeconfig(args: argparse.Namespace) -> str:
    """$KUBECONFIG, else the local control plane's in --state-dir."""
    import os

    return os.environ.get("KUBECONFIG") or str(Path(args.state_dir) / "kubeconfig")


def _enter_dev_cluster(args: argparse.Namespace) -> None:
    """Move this process into the dev cluster's network namespace (where Pod IPs route), when the cluster is
    the one of --state-dir (not another named by $KUBECONFIG)."""
    import os

    from .dev import controlplane, netns

    cp = controlplane.ControlPlane.load(Path(args.state_dir).resolve())
    if cp is not None and cp.netns and not os.environ.get("KUBECONFIG") and netns.exists(cp.netns):
        netns.enter(cp.netns)


def cmd_dev_proxy(args: argparse.Namespace) -> int:

    from kubernetes import config

    from .dev.proxy import Proxy, Resolver, TcpForwarder, parse_target

    try:
        service = parse_target(args.target)
    except ValueError as exc:
        print(f"mlops dev proxy: {exc}", file=sys.stderr)
        return 2
    kubeconfig = _kubeconfig(args)
    api = config.new_client_from_config(kubeconfig)
    proxy = Proxy(Resolver(api, args.namespace, service), port=args.port, via_api=args.via_apiserver)
    grpc = None
    if args.grpc_port is not None and not args.via_apiserver:  # the pod proxy speaks HTTP/1 only
        grpc = TcpForwarder(Resolver(api, args.namespace, service, port_name="grpc"), port=args.grpc_port)
    _enter_dev_cluster(args)  # after binding: the listeners stay on the host's loopback
    if grpc is not None:
        grpc.start()
    print(f"forwarding {proxy.url} → svc/{service} in namespace {args.namespace}"
          + (f"; gRPC {grpc.address} → its grpc port" if grpc else "") + " (Ctrl-C stops)", flush=True)
    try:
        proxy.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.server.server_close()
        if grpc is not None:
            grpc.stop()
    return 0


def cmd_dev_loop(args: argparse.Namespace) -> int:
    import contextlib

    import boto3
    from kubernetes import config

    from .dev.loop import LoopFailed, run_loop

    kubeconfig = _kubeconfig(args)
    s3 = boto3.client("s3", endpoint_url=args.s3_endpoint)
    if args.create_buckets:
        for bucket in ("datasets", "models"):
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
                s3.create_bucket(Bucket=bucket)
    try:
        facts = run_loop(config.new_client_from_config(kubeconfig), args.namespace, s3,
                         bad_candidate=not args.no_bad_candidate, via_api=args.via_apiserver)
    except LoopFailed as exc:
        print(f"mlops dev loop: {exc}", file=sys.stderr)
        return 1
    print(f"the loop closed in {facts.seconds:.0f} s")
    return 0


def cmd_dev_logs(args: argparse.Namespace) -> int:
    """`kubectl logs` (the real one) against the dev cluster: the kubelet serves the logs now."""
    import os

    from .dev.tools import tool

    kubeconfig = Path(args.state_dir).resolve() / "kubeconfig"
    os.execv(tool("kubectl"), [tool("kubectl"), f"--kubeconfig={kubeconfig}", "logs", *args.kubectl_args])


def cmd_run(args: argparse.Namespace) -> int:
    _without_kubernetes_client()
    import kopf

    from . import main
    from .config import Settings

    namespaces = args.namespace or list(Settings.from_env().namespaces)
    main.run_in(namespaces)
    kopf.configure(verbose=args.verbose)
    _quiet_collector()
    # on uvloop where it is installed, as `kopf run` does (kopf.run alone does not): the loop's own work (sockets,
    # TLS, callbacks) was a fifth of the operator's CPU under load in bench/scale_bench.py (py-spy)
    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        kopf.run(
            loop=runner.get_loop(),
            clusterwide=True,  # kopf runs the process and watches none of our kinds: the informers do, in `namespaces`
            liveness_endpoint=args.liveness,
            standalone=True,
        )
    return 0


def _without_kubernetes_client() -> None:
    """kopf imports the official kubernetes client when it is installed (kfp, a dependency, requires it) only to
    recognise that client's model objects and to offer a login through it; the operator gives kopf neither (its own
    API client, its own login handler). Marked absent before kopf loads, the operator process does without it and
    the thousand modules it pulls in (jsonschema, requests, its generated models): `import kopf, mlops_operator.main`
    took 104 MB of RSS and 1.2 s, now 61 MB and 0.5 s. Left alone when something has imported it already."""
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]  # an import of it raises ImportError


def _quiet_collector() -> None:
    """What is loaded by now (kopf, aiohttp, pydantic's schemas, our modules) lives as long as the process: out of
    the cycle collector's sight (refcounting still frees it), a full collection walks the cache alone; and young
    collections are rarer (the watch events decoded are acyclic and freed by refcount, most before a collection
    sees them). Over a burst of 1,000 ModelDeployments in bench/scale_bench.py (gc.callbacks, 4 runs) the collector
    took 0.18-0.21 s of the operator's 2.1-2.7 s CPU, one full collection alone 74-129 ms; frozen, 0.11-0.13 s
    (that collection 18 ms); frozen with young collections every 10,000 allocations instead of 700, 0.02 s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in RUNTIME_COMMANDS.items():
        sub.add_parser(name, help=f"runtime: see `mlops {name} --help` ({module})", add_help=False)

    p = sub.add_parser("crds", help="generate crds/*.yaml from the typed API")
    p.add_argument("--check", action="store_true", help="exit 1 when the files are stale, write nothing")
    p.add_argument("--dir", help="output directory (default: the repository's crds/)")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser("manifests", help="render manifests/install.yaml from the Helm chart")
    p.add_argument("--check", action="store_true", help="exit 1 when the file is stale, write nothing")
    p.set_defaults(func=cmd_manifests)

    p = sub.add_parser("run", help="run the operator")
    p.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    p.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)

    from .commands import VERBS

    for verb, text in VERBS.items():
        p = sub.add_parser(verb, help=f"ModelDeployment: {text}")
        p.add_argument("name", help="the ModelDeployment")
        p.add_argument("-n", "--namespace")
        if verb == "rollback":
            p.add_argument("--to", dest="revision", required=True, help="a revision from status.history")
        else:
            p.add_argument("--revision", help="default: the candidate (retry: the last rejected revision)")
        p.set_defaults(func=cmd_rollout, verb=verb)

    p = sub.add_parser("get", help="tables of TrainingRuns, ModelDeployments, DriftPolicies")
    p.add_argument("what", nargs="?", default="all", choices=["all", "tr", "md", "dp"])
    p.add_argument("-n", "--namespace")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("status", help="one model's loop as a tree: deployment, versions, drift (md/NAME)")
    p.add_argument("target", help="md/NAME")
    p.add_argument("-n", "--namespace")
    p.set_defaults(func=cmd_status)
    dev = sub.add_parser("dev", help="a local Kubernetes control plane for development and tests")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    p = dev_sub.add_parser("up", help="start a cluster: etcd, the control plane and a node (kubelet + containerd)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument("--no-crds", action="store_true", help="do not install the CRDs")
    p.set_defaults(func=cmd_dev_up)
    p = dev_sub.add_parser("exec", help="run a command inside the cluster's network namespace")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS]")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.set_defaults(func=cmd_dev_exec)
    p = dev_sub.add_parser("images", help="build the operator and runtime images (buildah) and import them")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="whose containerd to import into, if one runs")
    p.set_defaults(func=cmd_dev_images)
    p = dev_sub.add_parser("lock", help="hash-pinned requirements for the images (images/requirements/, uv)")
    p.add_argument("--check", action="store_true", help="exit 1 when they disagree with the constraints (offline)")
    p.set_defaults(func=cmd_dev_lock)
    p = dev_sub.add_parser("down", help="stop every process `mlops dev up` started")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.set_defaults(func=cmd_dev_down)
    p = dev_sub.add_parser("logs", help="kubectl logs against the dev cluster (its kubeconfig)")
    p.add_argument("kubectl_args", nargs=argparse.REMAINDER, help="what kubectl logs takes: POD [-c C] [-n NS] [-p]")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.set_defaults(func=cmd_dev_logs)
    p = dev_sub.add_parser("proxy", help="forward loopback traffic to a Service's ready pods (HTTPRoute weights too)")
    p.add_argument("target", help="svc/NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--port", type=int, default=8000, help="local port (0: any free one)")
    p.add_argument("--grpc-port", type=int, default=None,
                   help="also forward connections on this local port to the Service's grpc port (0: any free one)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="whose kubeconfig, unless KUBECONFIG is set")
    p.add_argument("--via-apiserver", action="store_true",
                   help="reach the pods through the apiserver's pod proxy (kind, remote clusters)")
    p.set_defaults(func=cmd_dev_proxy)
    p = dev_sub.add_parser("loop", help="run the demo's loop (examples/loop/) in a namespace an operator watches")
    p.add_argument("-n", "--namespace", default="mlops-demo")
    p.add_argument("--s3-endpoint", help="where s3://datasets is (credentials from the AWS_* variables)")
    p.add_argument("--via-apiserver", action="store_true", help="send traffic through the apiserver's pod proxy")
    p.add_argument("--create-buckets", action="store_true", help="create s3://datasets and s3://models if missing")
    p.add_argument("--no-bad-candidate", action="store_true", help="stop once the retrained version serves")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="whose kubeconfig, unless KUBECONFIG is set")
    p.set_defaults(func=cmd_dev_loop)
    p = dev_sub.add_parser("binaries", help="find, or build once into the cache, the control plane binaries")
    p.set_defaults(func=cmd_dev_binaries)
    p = dev_sub.add_parser("system", help="install the Debian packages the demo or the tests need, when missing")
    p.add_argument("purpose", nargs="?", choices=("demo", "test"), default="test")
    p.set_defaults(func=cmd_dev_system)
    p = dev_sub.add_parser("demo", help="run the operator on the local control plane against examples/")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument("--down", action="store_true", help="stop the control plane at the end")
    p.set_defaults(func=cmd_dev_demo)
    return parser


# data-plane commands: they run inside Pods from the runtime image and import nothing of the operator
RUNTIME_COMMANDS = {
    "train": "mlops_operator.runtime.train",
    "train-pipeline": "mlops_operator.runtime.pipeline",
    "serve": "mlops_operator.runtime.server",
    "storage-init": "mlops_operator.runtime.storage_init",
    "analyze": "mlops_operator.runtime.analyze",
    "mlflow": "mlops_operator.runtime.registry",
    "quality": "mlops_operator.runtime.quality",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in RUNTIME_COMMANDS:
        import importlib

        module = importlib.import_module(RUNTIME_COMMANDS[argv[0]])
        return int(module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
