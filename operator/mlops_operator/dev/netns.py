"""The dev cluster's own network namespace, and loopback forwarders into it.

`mlops dev up` makes one network namespace per cluster (`ip netns add`) and starts every component in it
with `nsenter --net` (only the network namespace: kubelet's volume mounts must stay visible to containerd,
which `ip netns exec`'s private mount namespace would hide). Every address the cluster uses lives in it:
the node address on its `lo`, the Pods' bridge, ClusterIPs. The host reaches it only through forwarders
bound to 127.0.0.1 (`Forwarder`, run as `python -m mlops_operator.dev.netns forward …`): the listening socket
is made in the host's namespace, then the process enters the cluster's, so every connection it opens starts
there. A thread can do the same for one call (`call`): setns(2) changes the calling thread only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
RUN_NETNS = Path("/run/netns")
T = TypeVar("T")


class NetnsError(RuntimeError):
    pass


def path(name: str) -> Path:
    return RUN_NETNS / name


def exists(name: str) -> bool:
    return path(name).exists()


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def create(name: str, addresses: tuple[str, ...] = ()) -> None:
    """The namespace with `lo` up, the given addresses on `lo` and IPv4 forwarding on (idempotent)."""
    if not exists(name):
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    for address in addresses:
        proc = subprocess.run(["ip", "-n", name, "addr", "add", address, "dev", "lo"], capture_output=True, text=True)
        if proc.returncode != 0 and "exists" not in proc.stderr:
            raise NetnsError(f"ip addr add {address} in {name}: {proc.stderr.strip()}")
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)


def delete(name: str) -> None:
    if exists(name):
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    with contextlib.suppress(FileNotFoundError):
        path(name).unlink()


def wrap(name: str, cmd: list[str]) -> list[str]:
    """cmd, run in the namespace's network (and nothing else of it)."""
    return wrap_path(path(name), cmd)


def wrap_path(ns: Path, cmd: list[str]) -> list[str]:
    return ["nsenter", f"--net={ns}", "--", *cmd]


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise NetnsError(f"setns: {os.strerror(ctypes.get_errno())}")


def enter(name: str) -> None:
    """Move the calling thread (the whole process, if it has one thread) into the namespace."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(name: str) -> Iterator[str]:
    """The calling thread in the namespace for the block (threads and processes it starts meanwhile are born
    there), then back where it was. Yields a path to the namespace it came from (`/proc/PID/fd/N`)."""
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(name)
        yield f"/proc/{os.getpid()}/fd/{origin}"
    finally:
        _setns(origin)
        os.close(origin)


def call(name: str, fn: Callable[[], T], timeout: float = 60) -> T:
    """fn() on a thread of its own inside the namespace (the caller's threads stay where they are)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            enter(name)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer from inside {name} within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


async def forward(listeners: list[tuple[socket.socket, str, int]]) -> None:
    """Serve each (listening socket, target host, target port) until cancelled."""
    async def serve_one(sock: socket.socket, host: str, port: int) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, TimeoutError):
                writer.close()
                return
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                for w in (writer, up_writer):
                    w.close()
        return await asyncio.start_server(handle, sock=sock)

    servers = [await serve_one(*item) for item in listeners]
    try:
        await asyncio.gather(*(s.serve_forever() for s in servers))
    finally:
        for s in servers:
            s.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlops_operator.dev.netns")
    sub = parser.add_subparsers(dest="command", required=True)
    fwd = sub.add_parser("forward", help="forward 127.0.0.1 ports of the host to addresses in a namespace")
    fwd.add_argument("--netns", required=True)
    fwd.add_argument("mapping", nargs="+", help="LOCALPORT=HOST:PORT (HOST as seen inside the namespace)")
    args = parser.parse_args(argv)
    listeners = []
    for item in args.mapping:
        local, _, target = item.partition("=")
        host, _, port = target.rpartition(":")
        listeners.append((listen(int(local)), host, int(port)))
    enter(args.netns)  # after binding: the listeners stay on the host's loopback
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(forward(listeners))


if __name__ == "__main__":
    main()
